"""Facts of the OrthoFoundation paper (Yu, Huang, Jiang et al., 2026) that several test files check against,
written once, independently of the code under test."""

from __future__ import annotations

#: The paper's downstream tasks, in the project's task names.
PAPER_TASKS = (
    "kl_grade",
    "kl_progression_4y",
    "kl_progression_8y",
    "tkr",
    "acl_injury",
    "pcl_injury",
    "mcl_injury",
    "lcl_injury",
    "meniscus_injury",
    "cartilage_lesion",
    "bone_contusion",
    "mpfl_injury",
    "patellar_dislocation",
    "hip_labral_tear",
    "supraspinatus_injury",
    "atfl_injury",
    "cfl_injury",
)
