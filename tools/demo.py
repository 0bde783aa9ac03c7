#!/usr/bin/env python
"""Run a model on images, a video or a webcam and draw its predictions.

    python tools/demo.py --config-file CFG --input img1.jpg 'dir/*.png' --output out_dir/ \
        --opts MODEL.WEIGHTS OUTPUT_DIR/model_final.pth
    python tools/demo.py --config-file CFG --video-input in.mp4 --output out.mp4 --opts ...
    python tools/demo.py --config-file CFG --webcam --opts ...

Images are drawn with `segtron.utils.visualizer.Visualizer` (panoptic, semantic and instance
predictions); small images are enlarged (``--scale``) so that labels stay legible. An
unreadable image is skipped with a warning and the others are processed.
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import torch
import tqdm

from segtron.config import CfgNode
from segtron.data import MetadataCatalog
from segtron.data.detection_utils import read_image
from segtron.engine import DefaultPredictor
from segtron.projects import get_config
from segtron.utils.logger import setup_logger
from segtron.utils.video_visualizer import VideoVisualizer
from segtron.utils.visualizer import ColorMode, VisImage, Visualizer

logger = logging.getLogger("segtron.tools.demo")

WINDOW_NAME = "segtron demo"
# Images whose shorter side is below this are enlarged for drawing (legible labels).
MIN_DRAW_SIZE = 480


def get_parser() -> argparse.ArgumentParser:
    """The demo's command-line flags (Detectron2's demo flags plus ``--scale``)."""
    parser = argparse.ArgumentParser(description="segtron demo: draw a model's predictions")
    parser.add_argument("--config-file", required=True, metavar="FILE", help="path to config")
    parser.add_argument("--webcam", action="store_true", help="take input from the webcam")
    parser.add_argument("--video-input", help="path to a video file")
    parser.add_argument(
        "--input", nargs="+", help="image files or glob patterns, e.g. 'images/*.jpg'"
    )
    parser.add_argument(
        "--output",
        help="a folder (or, for one image or a video, a file name) to save visualizations to; "
        "without it the results are shown in a window",
    )
    parser.add_argument(
        "--confidence-threshold",
        type=float,
        default=0.5,
        help="minimum score for instance predictions to be shown",
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=0.0,
        help=f"drawing scale; 0 (default) enlarges images smaller than {MIN_DRAW_SIZE} px",
    )
    parser.add_argument(
        "--opts",
        help="Modify config options using the command-line 'KEY VALUE' pairs",
        default=[],
        nargs=argparse.REMAINDER,
    )
    return parser


def setup_cfg(args: argparse.Namespace) -> CfgNode:
    """The frozen config, with the confidence threshold applied to every detector."""
    cfg = get_config(args.config_file, args.opts)
    threshold = args.confidence_threshold
    cfg.MODEL.RETINANET.SCORE_THRESH_TEST = threshold
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = threshold
    cfg.MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH = threshold
    cfg.freeze()
    return cfg


class VisualizationDemo:
    """Predict with `DefaultPredictor` and draw the predictions."""

    def __init__(
        self,
        cfg: CfgNode,
        confidence_threshold: float = 0.5,
        scale: float = 0.0,
        instance_mode: ColorMode = ColorMode.IMAGE,
    ) -> None:
        """Build the predictor.

        Args:
            cfg: the frozen config.
            confidence_threshold: instances scored lower are not drawn.
            scale: drawing scale; 0 chooses one per image (see MIN_DRAW_SIZE).
            instance_mode: how instances are coloured.
        """
        name = cfg.DATASETS.TEST[0] if len(cfg.DATASETS.TEST) else "__unused"
        self.metadata = MetadataCatalog.get(name)
        self.predictor = DefaultPredictor(cfg)
        self.confidence_threshold = confidence_threshold
        self.scale = scale
        self.instance_mode = instance_mode

    def _scale_for(self, image: np.ndarray) -> float:
        if self.scale > 0:
            return self.scale
        return max(1.0, MIN_DRAW_SIZE / min(image.shape[:2]))

    def run_on_image(self, image: np.ndarray) -> tuple[dict[str, Any], VisImage]:
        """Predict on one BGR image and draw the result.

        Returns:
            The model's output and the drawing.
        """
        predictions = self.predictor(image)
        visualizer = Visualizer(
            image[:, :, ::-1], self.metadata, self._scale_for(image), self.instance_mode
        )
        return predictions, self._draw(visualizer, predictions)

    def _draw(self, visualizer: Visualizer, predictions: dict[str, Any]) -> VisImage:
        cpu = torch.device("cpu")
        vis_output = None
        if "panoptic_seg" in predictions:
            panoptic_seg, segments_info = predictions["panoptic_seg"]
            vis_output = visualizer.draw_panoptic_seg(panoptic_seg.to(cpu), segments_info)
        else:
            if "sem_seg" in predictions:
                vis_output = visualizer.draw_sem_seg(predictions["sem_seg"].argmax(dim=0).to(cpu))
            if "instances" in predictions:
                vis_output = visualizer.draw_instance_predictions(self._confident(predictions))
        if vis_output is None:
            raise ValueError(
                "The model returned none of 'panoptic_seg', 'sem_seg' and 'instances'; nothing "
                f"to draw (keys: {sorted(predictions)})."
            )
        return vis_output

    def _confident(self, predictions: dict[str, Any]) -> Any:
        instances = predictions["instances"].to(torch.device("cpu"))
        if instances.has("scores"):
            instances = instances[instances.scores >= self.confidence_threshold]
        return instances

    def run_on_video(self, video: cv2.VideoCapture) -> Iterator[np.ndarray]:
        """Predict on every frame of a video and yield the drawn BGR frames."""
        video_visualizer = VideoVisualizer(self.metadata, self.instance_mode)
        while video.isOpened():
            success, frame = video.read()
            if not success:
                break
            predictions = self.predictor(frame)
            rgb = frame[:, :, ::-1]
            if "panoptic_seg" in predictions:
                panoptic_seg, segments_info = predictions["panoptic_seg"]
                vis = video_visualizer.draw_panoptic_seg(rgb, panoptic_seg.cpu(), segments_info)
            elif "instances" in predictions:
                vis = video_visualizer.draw_instance_predictions(rgb, self._confident(predictions))
            else:
                vis = video_visualizer.draw_sem_seg(rgb, predictions["sem_seg"].argmax(dim=0).cpu())
            yield cv2.cvtColor(vis.get_image(), cv2.COLOR_RGB2BGR)


def expand_inputs(patterns: list[str]) -> list[str]:
    """Files named by `patterns` (paths or glob patterns), in order, without duplicates."""
    files: list[str] = []
    for pattern in patterns:
        matches = sorted(glob.glob(os.path.expanduser(pattern)))
        if not matches:
            logger.warning(f"No file matches {pattern!r}; skipping it.")
        files.extend(m for m in matches if m not in files)
    return files


def output_path(output: str, input_path: str, num_inputs: int) -> str:
    """Where to save the drawing of `input_path`: inside `output` if it is a folder."""
    if os.path.isdir(output) or num_inputs > 1 or output.endswith(os.sep):
        os.makedirs(output, exist_ok=True)
        stem = os.path.splitext(os.path.basename(input_path))[0]
        return os.path.join(output, stem + ".png")
    return output


def run_images(demo: VisualizationDemo, args: argparse.Namespace) -> int:
    """Process every input image; returns the number of images written or shown."""
    paths = expand_inputs(args.input)
    done = 0
    for path in tqdm.tqdm(paths, disable=not args.output, desc="demo"):
        try:
            image = read_image(path, format="BGR")
        except OSError as e:  # ImageReadError and FileNotFoundError included
            logger.warning(f"Skipping {path}: {e}")
            continue
        start = time.perf_counter()
        predictions, vis = demo.run_on_image(image)
        logger.info(f"{path}: {_describe(predictions)} in {time.perf_counter() - start:.2f}s")
        if args.output:
            vis.save(output_path(args.output, path, len(paths)))
        else:
            cv2.namedWindow(WINDOW_NAME, cv2.WINDOW_NORMAL)
            cv2.imshow(WINDOW_NAME, vis.get_image()[:, :, ::-1])
            if cv2.waitKey(0) == 27:
                break
        done += 1
    logger.info(f"Processed {done} of {len(paths)} images.")
    return done


def _describe(predictions: dict[str, Any]) -> str:
    parts = []
    if "instances" in predictions:
        parts.append(f"{len(predictions['instances'])} instances")
    if "panoptic_seg" in predictions:
        parts.append(f"{len(predictions['panoptic_seg'][1])} panoptic segments")
    if "sem_seg" in predictions:
        parts.append("a semantic map")
    return ", ".join(parts) or "nothing"


def run_video(demo: VisualizationDemo, args: argparse.Namespace) -> None:
    """Process a video file (or the webcam), writing or showing the drawn frames."""
    source: int | str = 0 if args.webcam else args.video_input
    video = cv2.VideoCapture(source)
    if not video.isOpened():
        raise FileNotFoundError(f"Cannot open video source {source!r}.")
    frames = int(video.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    writer = None
    try:
        for frame in tqdm.tqdm(demo.run_on_video(video), total=frames, desc="demo"):
            if args.output:
                if writer is None:
                    path = args.output
                    if os.path.isdir(path):
                        stem = os.path.splitext(os.path.basename(str(source)))[0]
                        path = os.path.join(path, stem + ".mp4")
                    fps = video.get(cv2.CAP_PROP_FPS) or 25.0
                    writer = cv2.VideoWriter(
                        path, cv2.VideoWriter_fourcc(*"mp4v"), fps, frame.shape[1::-1]
                    )
                writer.write(frame)
            else:
                cv2.namedWindow(WINDOW_NAME, cv2.WINDOW_NORMAL)
                cv2.imshow(WINDOW_NAME, frame)
                if cv2.waitKey(1) == 27:
                    break
    finally:
        video.release()
        if writer is not None:
            writer.release()


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit status."""
    args = get_parser().parse_args(argv)
    setup_logger(name="segtron")
    sources = [bool(args.input), bool(args.video_input), args.webcam]
    if sum(sources) != 1:
        print(
            "demo.py: error: give exactly one of --input, --video-input, --webcam", file=sys.stderr
        )
        return 2
    try:
        cfg = setup_cfg(args)
    except (FileNotFoundError, KeyError, ValueError) as e:
        print(f"demo.py: error: {e}", file=sys.stderr)
        return 2
    demo = VisualizationDemo(cfg, args.confidence_threshold, args.scale)
    if args.input:
        return 0 if run_images(demo, args) else 1
    run_video(demo, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
