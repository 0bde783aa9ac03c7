"""Packaging entry point.

Metadata and dependencies live in ``setup.cfg``. This file only adds the package mapping that
installs every project under ``projects/<Name>/<package>`` as ``segtron.projects.<package>``
and lists it in the ``segtron.projects`` entry-point group, so a new project needs no packaging
change, and installs the YAML files of ``configs/`` as ``segtron/model_zoo/configs`` (read by
``segtron.model_zoo`` when segtron is not installed in editable mode).
"""

from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent


def project_packages() -> dict[str, str]:
    """Map ``segtron.projects.<pkg>`` (and its subpackages) to their folders under projects/."""
    mapping: dict[str, str] = {}
    for init in sorted(ROOT.glob("projects/*/*/__init__.py")):
        package_root = init.parent
        base = f"segtron.projects.{package_root.name}"
        mapping[base] = package_root.relative_to(ROOT).as_posix()
        for sub in find_packages(str(package_root)):
            mapping[f"{base}.{sub}"] = (
                (package_root / sub.replace(".", "/")).relative_to(ROOT).as_posix()
            )
    return mapping


def config_packages() -> dict[str, str]:
    """Map ``segtron.model_zoo.configs`` (and one name per subfolder) to configs/ and its folders.

    These are data-only packages (YAML files, no ``__init__.py``); naming every folder keeps
    setuptools from warning about folders that would be installed without being listed.
    """
    configs = ROOT / "configs"
    folders = [configs, *sorted(p for p in configs.rglob("*") if p.is_dir())]
    return {
        ".".join(("segtron.model_zoo.configs", *folder.relative_to(configs).parts)): (
            folder.relative_to(ROOT).as_posix()
        )
        for folder in folders
    }


PROJECTS = project_packages()
# configs/ is shipped inside the model zoo package (read by segtron.model_zoo).
CONFIGS = config_packages()
# Tools discover the installed projects through this group (segtron.projects.load_projects).
PROJECT_ENTRY_POINTS = [
    f"{name.rsplit('.', 1)[1]} = {name}" for name in PROJECTS if name.count(".") == 2
]

setup(
    packages=find_packages(include=["segtron", "segtron.*"]) + list(PROJECTS) + list(CONFIGS),
    package_dir=PROJECTS | CONFIGS,
    package_data={name: ["*.yaml"] for name in CONFIGS},
    entry_points={"segtron.projects": PROJECT_ENTRY_POINTS},
)
