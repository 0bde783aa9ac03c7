"""Proposal generators: the region proposal network (RPN) and its registries.

Importing this package registers :class:`RPN` in ``PROPOSAL_GENERATOR_REGISTRY`` and
:class:`StandardRPNHead` in ``RPN_HEAD_REGISTRY``.
"""

from .build import PROPOSAL_GENERATOR_REGISTRY, build_proposal_generator
from .proposal_utils import add_ground_truth_to_proposals, find_top_rpn_proposals
from .rpn import RPN, RPN_HEAD_REGISTRY, StandardRPNHead, build_rpn_head

__all__ = [
    "PROPOSAL_GENERATOR_REGISTRY",
    "RPN",
    "RPN_HEAD_REGISTRY",
    "StandardRPNHead",
    "add_ground_truth_to_proposals",
    "build_proposal_generator",
    "build_rpn_head",
    "find_top_rpn_proposals",
]
