"""Checks of package.json, the manifest `mpremote mip install github:OWNER/REPO` reads."""

import json
import re
from pathlib import Path

from microsmtp_tools import mpy

REPO_DIR = Path(__file__).resolve().parent.parent
LIBRARY_DIR = REPO_DIR / "firmware" / "microsmtp"


def load_package():
    return json.loads((REPO_DIR / "package.json").read_text())


def test_package_urls_exist_in_tree():
    package = load_package()

    for destination, url in package["urls"]:
        # Relative URLs resolve against the folder of package.json (mip and mpremote mip).
        assert not url.startswith(("http:", "https:", "github:", "gitlab:", "/")), url
        assert (REPO_DIR / url).is_file(), "package.json lists %s, which does not exist" % url
        assert destination == "microsmtp/" + Path(url).name


def test_package_lists_every_board_module():
    listed = {url for _destination, url in load_package()["urls"]}

    for path in sorted(LIBRARY_DIR.glob("*.py")):
        relative = path.relative_to(REPO_DIR).as_posix()
        if relative.endswith(mpy.HOST_ONLY):
            # Imported on CPython only, so mip leaves it off the board.
            assert relative not in listed, "%s is for CPython only" % relative
        else:
            assert relative in listed, "%s is missing from package.json" % relative
    assert not list(LIBRARY_DIR.glob("*/*.py")), "subpackages need their own package.json entries"


def test_package_version_matches_library():
    source = (LIBRARY_DIR / "__init__.py").read_text()
    version = re.search(r'^__version__ = "([^"]+)"', source, re.MULTILINE).group(1)

    assert load_package()["version"] == version
