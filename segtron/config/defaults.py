"""The default configuration: Detectron2's keys and default values, plus a few segtron keys.

Every key and default below equals Detectron2's ``detectron2/config/defaults.py`` so its YAML
configs merge unchanged. segtron's own additions are marked "segtron:" and default to values that
leave Detectron2's behaviour untouched. Projects add their keys with ``add_<project>_config``.
"""

from segtron.config.config import CfgNode as CN

_C = CN()

# Config format version; VERSION 2 is the format of every Detectron2 YAML in use today.
_C.VERSION = 2

# ------------------------------------------------------------------------------------------------
# Model
# ------------------------------------------------------------------------------------------------
_C.MODEL = CN()
_C.MODEL.LOAD_PROPOSALS = False
_C.MODEL.MASK_ON = False
_C.MODEL.KEYPOINT_ON = False
_C.MODEL.DEVICE = "cuda"
_C.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
# Checkpoint to load: a local path or a URL (detectron2://..., https://...).
_C.MODEL.WEIGHTS = ""
# Normalisation of input pixels, in the channel order of INPUT.FORMAT (BGR by default).
# MSRA/Caffe2 weights absorbed the std into conv1, hence std 1; torchvision weights want
# RGB with mean [123.675, 116.28, 103.53] and std [58.395, 57.12, 57.375].
_C.MODEL.PIXEL_MEAN = [103.530, 116.280, 123.675]
_C.MODEL.PIXEL_STD = [1.0, 1.0, 1.0]

# ------------------------------------------------------------------------------------------------
# Input
# ------------------------------------------------------------------------------------------------
_C.INPUT = CN()
# Shortest-edge resizing at training time: sizes to pick from ("choice") or a [min, max]
# range to sample from ("range"), with an upper bound on the longest edge.
_C.INPUT.MIN_SIZE_TRAIN = (800,)
_C.INPUT.MIN_SIZE_TRAIN_SAMPLING = "choice"
_C.INPUT.MAX_SIZE_TRAIN = 1333
# Shortest-edge resizing at test time; 0 disables it.
_C.INPUT.MIN_SIZE_TEST = 800
_C.INPUT.MAX_SIZE_TEST = 1333
# "horizontal", "vertical" or "none".
_C.INPUT.RANDOM_FLIP = "horizontal"
# Random cropping at training time; TYPE is one of relative_range, relative, absolute,
# absolute_range; SIZE is a fraction for the relative types and pixels for the absolute ones.
_C.INPUT.CROP = CN({"ENABLED": False})
_C.INPUT.CROP.TYPE = "relative_range"
_C.INPUT.CROP.SIZE = [0.9, 0.9]
# Channel order the model expects ("BGR", "RGB", or a PIL mode such as "L").
_C.INPUT.FORMAT = "BGR"
# Instance mask format used for training: "polygon" or "bitmask".
_C.INPUT.MASK_FORMAT = "polygon"
# segtron: the training mapper, by name in segtron.data.DATASET_MAPPER_REGISTRY (a project
# registers its own, e.g. Panoptic-DeepLab's targets); as Mask2Former's key of this name.
_C.INPUT.DATASET_MAPPER_NAME = "DatasetMapper"

# ------------------------------------------------------------------------------------------------
# Datasets
# ------------------------------------------------------------------------------------------------
_C.DATASETS = CN()
# Names registered in DatasetCatalog; several training sets are concatenated.
_C.DATASETS.TRAIN = ()
_C.DATASETS.PROPOSAL_FILES_TRAIN = ()
_C.DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TRAIN = 2000
_C.DATASETS.TEST = ()
_C.DATASETS.PROPOSAL_FILES_TEST = ()
_C.DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TEST = 1000

# ------------------------------------------------------------------------------------------------
# Data loader
# ------------------------------------------------------------------------------------------------
_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 4
# Batch landscape images with landscape images and portrait with portrait.
_C.DATALOADER.ASPECT_RATIO_GROUPING = True
# "TrainingSampler" or "RepeatFactorTrainingSampler".
_C.DATALOADER.SAMPLER_TRAIN = "TrainingSampler"
_C.DATALOADER.REPEAT_THRESHOLD = 0.0
_C.DATALOADER.REPEAT_SQRT = True
# Drop training images without instance annotations.
_C.DATALOADER.FILTER_EMPTY_ANNOTATIONS = True

# ------------------------------------------------------------------------------------------------
# Backbone
# ------------------------------------------------------------------------------------------------
_C.MODEL.BACKBONE = CN()
_C.MODEL.BACKBONE.NAME = "build_resnet_backbone"
# Number of leading stages (stem = 1, res2 = 2, ...) whose weights are frozen.
_C.MODEL.BACKBONE.FREEZE_AT = 2

# ------------------------------------------------------------------------------------------------
# FPN
# ------------------------------------------------------------------------------------------------
_C.MODEL.FPN = CN()
# Backbone features to build the pyramid from; their strides must be consecutive powers of 2.
_C.MODEL.FPN.IN_FEATURES = []
_C.MODEL.FPN.OUT_CHANNELS = 256
# "" or "GN".
_C.MODEL.FPN.NORM = ""
# How top-down and lateral features are fused: "sum" or "avg".
_C.MODEL.FPN.FUSE_TYPE = "sum"

# ------------------------------------------------------------------------------------------------
# Proposal generator and anchors
# ------------------------------------------------------------------------------------------------
_C.MODEL.PROPOSAL_GENERATOR = CN()
# "RPN", "RRPN" or "PrecomputedProposals".
_C.MODEL.PROPOSAL_GENERATOR.NAME = "RPN"
# Proposals must be larger than this (in input pixels) on both sides.
_C.MODEL.PROPOSAL_GENERATOR.MIN_SIZE = 0

_C.MODEL.ANCHOR_GENERATOR = CN()
_C.MODEL.ANCHOR_GENERATOR.NAME = "DefaultAnchorGenerator"
# Anchor sizes (sqrt of area, input pixels), one list per input feature or one list for all.
_C.MODEL.ANCHOR_GENERATOR.SIZES = [[32, 64, 128, 256, 512]]
# Aspect ratios (height / width), one list per input feature or one list for all.
_C.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [[0.5, 1.0, 2.0]]
# Angles in degrees, for rotated anchors.
_C.MODEL.ANCHOR_GENERATOR.ANGLES = [[-90, 0, 90]]
# Offset of the first anchor centre from the image corner, in units of the stride, in [0, 1).
_C.MODEL.ANCHOR_GENERATOR.OFFSET = 0.0

# ------------------------------------------------------------------------------------------------
# RPN
# ------------------------------------------------------------------------------------------------
_C.MODEL.RPN = CN()
_C.MODEL.RPN.HEAD_NAME = "StandardRPNHead"
_C.MODEL.RPN.IN_FEATURES = ["res4"]
# Anchors further than this outside the image are dropped; -1 keeps all.
_C.MODEL.RPN.BOUNDARY_THRESH = -1
# IoU < 0.3 -> negative (0), between -> ignored (-1), >= 0.7 -> positive (1).
_C.MODEL.RPN.IOU_THRESHOLDS = [0.3, 0.7]
_C.MODEL.RPN.IOU_LABELS = [0, -1, 1]
_C.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 256
_C.MODEL.RPN.POSITIVE_FRACTION = 0.5
# "smooth_l1", "giou", "diou" or "ciou".
_C.MODEL.RPN.BBOX_REG_LOSS_TYPE = "smooth_l1"
_C.MODEL.RPN.BBOX_REG_LOSS_WEIGHT = 1.0
_C.MODEL.RPN.BBOX_REG_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
# Smooth-L1 transition point; 0 makes it plain L1.
_C.MODEL.RPN.SMOOTH_L1_BETA = 0.0
_C.MODEL.RPN.LOSS_WEIGHT = 1.0
# Top-k before NMS (per FPN level) and after NMS (per image).
_C.MODEL.RPN.PRE_NMS_TOPK_TRAIN = 12000
_C.MODEL.RPN.PRE_NMS_TOPK_TEST = 6000
_C.MODEL.RPN.POST_NMS_TOPK_TRAIN = 2000
_C.MODEL.RPN.POST_NMS_TOPK_TEST = 1000
_C.MODEL.RPN.NMS_THRESH = 0.7
# Hidden conv widths of the RPN head; -1 means "same as the input channels".
_C.MODEL.RPN.CONV_DIMS = [-1]

# ------------------------------------------------------------------------------------------------
# ROI heads
# ------------------------------------------------------------------------------------------------
_C.MODEL.ROI_HEADS = CN()
_C.MODEL.ROI_HEADS.NAME = "Res5ROIHeads"
# Number of foreground classes.
_C.MODEL.ROI_HEADS.NUM_CLASSES = 80
_C.MODEL.ROI_HEADS.IN_FEATURES = ["res4"]
# IoU < 0.5 -> background, >= 0.5 -> foreground.
_C.MODEL.ROI_HEADS.IOU_THRESHOLDS = [0.5]
_C.MODEL.ROI_HEADS.IOU_LABELS = [0, 1]
# Sampled RoIs per image during training and their foreground fraction.
_C.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 512
_C.MODEL.ROI_HEADS.POSITIVE_FRACTION = 0.25
# Test-time score threshold and NMS IoU threshold.
_C.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.05
_C.MODEL.ROI_HEADS.NMS_THRESH_TEST = 0.5
# Add the ground-truth boxes to the proposals before sampling (training).
_C.MODEL.ROI_HEADS.PROPOSAL_APPEND_GT = True

_C.MODEL.ROI_BOX_HEAD = CN()
# Empty for C4 models; "FastRCNNConvFCHead" for FPN models.
_C.MODEL.ROI_BOX_HEAD.NAME = ""
_C.MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE = "smooth_l1"
_C.MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT = 1.0
_C.MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
_C.MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA = 0.0
_C.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 14
_C.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO = 0
_C.MODEL.ROI_BOX_HEAD.POOLER_TYPE = "ROIAlignV2"
_C.MODEL.ROI_BOX_HEAD.NUM_FC = 0
_C.MODEL.ROI_BOX_HEAD.FC_DIM = 1024
_C.MODEL.ROI_BOX_HEAD.NUM_CONV = 0
_C.MODEL.ROI_BOX_HEAD.CONV_DIM = 256
# "", "GN" or "SyncBN".
_C.MODEL.ROI_BOX_HEAD.NORM = ""
_C.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG = False
_C.MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES = False
# Federated loss with sigmoid cross-entropy (used for LVIS).
_C.MODEL.ROI_BOX_HEAD.USE_FED_LOSS = False
_C.MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE = False
_C.MODEL.ROI_BOX_HEAD.FED_LOSS_FREQ_WEIGHT_POWER = 0.5
_C.MODEL.ROI_BOX_HEAD.FED_LOSS_NUM_CLASSES = 50

_C.MODEL.ROI_BOX_CASCADE_HEAD = CN()
# One entry per cascade stage.
_C.MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS = (
    (10.0, 10.0, 5.0, 5.0),
    (20.0, 20.0, 10.0, 10.0),
    (30.0, 30.0, 15.0, 15.0),
)
_C.MODEL.ROI_BOX_CASCADE_HEAD.IOUS = (0.5, 0.6, 0.7)

_C.MODEL.ROI_MASK_HEAD = CN()
_C.MODEL.ROI_MASK_HEAD.NAME = "MaskRCNNConvUpsampleHead"
_C.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION = 14
_C.MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO = 0
_C.MODEL.ROI_MASK_HEAD.NUM_CONV = 0
_C.MODEL.ROI_MASK_HEAD.CONV_DIM = 256
_C.MODEL.ROI_MASK_HEAD.NORM = ""
_C.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK = False
_C.MODEL.ROI_MASK_HEAD.POOLER_TYPE = "ROIAlignV2"

_C.MODEL.ROI_KEYPOINT_HEAD = CN()
_C.MODEL.ROI_KEYPOINT_HEAD.NAME = "KRCNNConvDeconvUpsampleHead"
_C.MODEL.ROI_KEYPOINT_HEAD.POOLER_RESOLUTION = 14
_C.MODEL.ROI_KEYPOINT_HEAD.POOLER_SAMPLING_RATIO = 0
_C.MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS = (512,) * 8
_C.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS = 17
_C.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE = 1
_C.MODEL.ROI_KEYPOINT_HEAD.NORMALIZE_LOSS_BY_VISIBLE_KEYPOINTS = True
_C.MODEL.ROI_KEYPOINT_HEAD.LOSS_WEIGHT = 1.0
_C.MODEL.ROI_KEYPOINT_HEAD.POOLER_TYPE = "ROIAlignV2"

# ------------------------------------------------------------------------------------------------
# Semantic segmentation head and Panoptic FPN
# ------------------------------------------------------------------------------------------------
_C.MODEL.SEM_SEG_HEAD = CN()
_C.MODEL.SEM_SEG_HEAD.NAME = "SemSegFPNHead"
_C.MODEL.SEM_SEG_HEAD.IN_FEATURES = ["p2", "p3", "p4", "p5"]
# Label value that takes no loss.
_C.MODEL.SEM_SEG_HEAD.IGNORE_VALUE = 255
_C.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 54
_C.MODEL.SEM_SEG_HEAD.CONVS_DIM = 128
# Stride that the head's outputs are upsampled to.
_C.MODEL.SEM_SEG_HEAD.COMMON_STRIDE = 4
# "" or "GN".
_C.MODEL.SEM_SEG_HEAD.NORM = "GN"
_C.MODEL.SEM_SEG_HEAD.LOSS_WEIGHT = 1.0

_C.MODEL.PANOPTIC_FPN = CN()
_C.MODEL.PANOPTIC_FPN.INSTANCE_LOSS_WEIGHT = 1.0
# Combination of instance and semantic outputs (ENABLED is kept for old configs only).
_C.MODEL.PANOPTIC_FPN.COMBINE = CN({"ENABLED": True})
_C.MODEL.PANOPTIC_FPN.COMBINE.OVERLAP_THRESH = 0.5
_C.MODEL.PANOPTIC_FPN.COMBINE.STUFF_AREA_LIMIT = 4096
_C.MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH = 0.5

# ------------------------------------------------------------------------------------------------
# RetinaNet
# ------------------------------------------------------------------------------------------------
_C.MODEL.RETINANET = CN()
_C.MODEL.RETINANET.NUM_CLASSES = 80
_C.MODEL.RETINANET.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]
_C.MODEL.RETINANET.NUM_CONVS = 4
_C.MODEL.RETINANET.IOU_THRESHOLDS = [0.4, 0.5]
_C.MODEL.RETINANET.IOU_LABELS = [0, -1, 1]
_C.MODEL.RETINANET.PRIOR_PROB = 0.01
_C.MODEL.RETINANET.SCORE_THRESH_TEST = 0.05
_C.MODEL.RETINANET.TOPK_CANDIDATES_TEST = 1000
_C.MODEL.RETINANET.NMS_THRESH_TEST = 0.5
_C.MODEL.RETINANET.BBOX_REG_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
_C.MODEL.RETINANET.FOCAL_LOSS_GAMMA = 2.0
_C.MODEL.RETINANET.FOCAL_LOSS_ALPHA = 0.25
_C.MODEL.RETINANET.SMOOTH_L1_LOSS_BETA = 0.1
_C.MODEL.RETINANET.BBOX_REG_LOSS_TYPE = "smooth_l1"
_C.MODEL.RETINANET.NORM = ""

# ------------------------------------------------------------------------------------------------
# ResNet / ResNeXt
# ------------------------------------------------------------------------------------------------
_C.MODEL.RESNETS = CN()
_C.MODEL.RESNETS.DEPTH = 50
# res4 for C4 models, res2..res5 for FPN models.
_C.MODEL.RESNETS.OUT_FEATURES = ["res4"]
# 1 for ResNet, > 1 for ResNeXt.
_C.MODEL.RESNETS.NUM_GROUPS = 1
# "FrozenBN", "BN", "SyncBN" or "GN".
_C.MODEL.RESNETS.NORM = "FrozenBN"
_C.MODEL.RESNETS.WIDTH_PER_GROUP = 64
# Stride 2 on the first 1x1 conv of a block (MSRA weights) rather than on the 3x3
# (torchvision and Caffe2 weights).
_C.MODEL.RESNETS.STRIDE_IN_1X1 = True
# Dilation of res5: 1 (stride 32) or 2 (DC5, stride 16).
_C.MODEL.RESNETS.RES5_DILATION = 1
# Width of res2's output; 64 for R18 and R34.
_C.MODEL.RESNETS.RES2_OUT_CHANNELS = 256
_C.MODEL.RESNETS.STEM_OUT_CHANNELS = 64
# Deformable convolutions per stage (res2..res5), modulated (v2) or not (v1).
_C.MODEL.RESNETS.DEFORM_ON_PER_STAGE = [False, False, False, False]
_C.MODEL.RESNETS.DEFORM_MODULATED = False
_C.MODEL.RESNETS.DEFORM_NUM_GROUPS = 1
# segtron: dilated ResNets for semantic models in the core. Detectron2's DeepLab project
# defines these same three keys; here their defaults leave a plain ResNet unchanged.
# Dilation of res4: 1, or 2 for output stride 8 (then RES5_DILATION is 4).
_C.MODEL.RESNETS.RES4_DILATION = 1
# Per-block multipliers of RES5_DILATION (DeepLab's multi-grid, e.g. [1, 2, 4]).
_C.MODEL.RESNETS.RES5_MULTI_GRID = [1, 1, 1]
# "basic" (one 7x7 conv) or "deeplab" (three 3x3 convs, as in ).
_C.MODEL.RESNETS.STEM_TYPE = "basic"

# ------------------------------------------------------------------------------------------------
# segtron: VGG-16 (build_vgg16_backbone), for FCN, SegNet and DeepLab v1/v2
# ------------------------------------------------------------------------------------------------
_C.MODEL.VGG = CN()
# Outputs after each stage's max pooling: "vgg1" .. "vgg5" (strides 2 .. 32; 2, 4, 8, 8, 8
# when DILATED).
_C.MODEL.VGG.OUT_FEATURES = ["vgg5"]
# Norm after each 3x3 conv: "" (none, as in VGG), "BN", "GN", ...
_C.MODEL.VGG.NORM = ""
# Output channels of the five stages; narrower widths suit small experiments.
_C.MODEL.VGG.CHANNELS_PER_STAGE = [64, 128, 256, 512, 512]
# DeepLab v1 (LargeFOV) / v2 VGG-16: pool1-3 3x3 stride 2 pad 1, pool4-5 3x3 stride 1 pad 1,
# Caffe (ceil) rounding, conv5 dilation 2, so vgg5 is at stride 8.
_C.MODEL.VGG.DILATED = False

# ------------------------------------------------------------------------------------------------
# Solver
# ------------------------------------------------------------------------------------------------
_C.SOLVER = CN()
# segtron: the optimizer, "SGD", "ADAM" or "ADAMW" (case-insensitive).
_C.SOLVER.OPTIMIZER = "SGD"
# "WarmupMultiStepLR", "WarmupCosineLR", "WarmupStepWithFixedGammaLR" or "WarmupPolyLR".
_C.SOLVER.LR_SCHEDULER_NAME = "WarmupMultiStepLR"
_C.SOLVER.MAX_ITER = 40000
_C.SOLVER.BASE_LR = 0.001
# Final learning rate of WarmupCosineLR.
_C.SOLVER.BASE_LR_END = 0.0
# segtron (DeepLab project's key): power p of WarmupPolyLR, lr ~ (1 - iter / MAX_ITER) ** p.
_C.SOLVER.POLY_LR_POWER = 0.9
# segtron (DeepLab project's key): WarmupPolyLR's floor, as a fraction of BASE_LR.
_C.SOLVER.POLY_LR_CONSTANT_ENDING = 0.0
_C.SOLVER.MOMENTUM = 0.9
_C.SOLVER.NESTEROV = False
# segtron: (beta1, beta2) of the ADAM and ADAMW optimizers.
_C.SOLVER.BETAS = (0.9, 0.999)
_C.SOLVER.WEIGHT_DECAY = 0.0001
# Weight decay of normalisation layers' affine parameters.
_C.SOLVER.WEIGHT_DECAY_NORM = 0.0
_C.SOLVER.GAMMA = 0.1
# Iterations at which the learning rate is multiplied by GAMMA.
_C.SOLVER.STEPS = (30000,)
# Number of decays of WarmupStepWithFixedGammaLR.
_C.SOLVER.NUM_DECAYS = 3
_C.SOLVER.WARMUP_FACTOR = 1.0 / 1000
_C.SOLVER.WARMUP_ITERS = 1000
_C.SOLVER.WARMUP_METHOD = "linear"
# Stretch the schedule after warmup so that it still ends at MAX_ITER.
_C.SOLVER.RESCALE_INTERVAL = False
_C.SOLVER.CHECKPOINT_PERIOD = 5000
# Images per iteration across all processes.
_C.SOLVER.IMS_PER_BATCH = 16
# When > 0, the trainer rescales batch size, LR and schedule to the actual number of workers.
_C.SOLVER.REFERENCE_WORLD_SIZE = 0
# Detectron v1's bias treatment; keep the defaults unless reproducing it.
_C.SOLVER.BIAS_LR_FACTOR = 1.0
# None means WEIGHT_DECAY.
_C.SOLVER.WEIGHT_DECAY_BIAS = None
_C.SOLVER.CLIP_GRADIENTS = CN({"ENABLED": False})
# "value" (clip each element), "norm" (per-parameter norm) or "full_model" (global norm).
_C.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "value"
_C.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1.0
# p of the L-p norm for "norm"; .inf for the max norm.
_C.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0
# Mixed precision training (inference is unaffected).
_C.SOLVER.AMP = CN({"ENABLED": False})
# segtron: the autocast dtype of AMP training, "float16" (with a GradScaler) or "bfloat16".
_C.SOLVER.AMP.PRECISION = "float16"

# ------------------------------------------------------------------------------------------------
# Test
# ------------------------------------------------------------------------------------------------
_C.TEST = CN()
# Checks of the final metrics: [[task, metric, value, tolerance], ...].
_C.TEST.EXPECTED_RESULTS = []
# Evaluate every EVAL_PERIOD iterations during training; 0 disables it.
_C.TEST.EVAL_PERIOD = 0
_C.TEST.KEYPOINT_OKS_SIGMAS = []
_C.TEST.DETECTIONS_PER_IMAGE = 100
_C.TEST.AUG = CN({"ENABLED": False})
_C.TEST.AUG.MIN_SIZES = (400, 500, 600, 700, 800, 900, 1000, 1100, 1200)
_C.TEST.AUG.MAX_SIZE = 4000
_C.TEST.AUG.FLIP = True
_C.TEST.PRECISE_BN = CN({"ENABLED": False})
_C.TEST.PRECISE_BN.NUM_ITER = 200

# ------------------------------------------------------------------------------------------------
# Miscellaneous
# ------------------------------------------------------------------------------------------------
_C.OUTPUT_DIR = "./output"
# A negative seed draws a random one.
_C.SEED = -1
_C.CUDNN_BENCHMARK = False
# "" leaves torch's float32 matmul precision alone; else "highest", "high" or "medium".
_C.FLOAT32_PRECISION = ""
# Visualise training batches every VIS_PERIOD iterations; 0 disables it.
_C.VIS_PERIOD = 0
# Free-form values for quick experiments; never used by the library.
_C.GLOBAL = CN()
_C.GLOBAL.HACK = 1.0
