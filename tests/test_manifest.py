"""The Teams app package: `manifest/` (template, icons, the script that draws them) and `python -m bot package`.

* The generated manifest validates against Microsoft's official JSON schema of its `manifestVersion`, read from
  `../shared/schemas/teams/` (skipped with a reason when that folder is missing; CI fails on skips).
* The command lists agree with the command table (`bot.commands`) and Teams' limits.
* The icons have Teams' sizes; the outline icon is white on transparent; `manifest/make_icons.py` still draws
  exactly the committed pixels.
* The zip holds exactly manifest.json, color.png and outline.png at its root, and that manifest is the one
  validated.
* The CLI, in a subprocess: bad input is exit 2 with one clear line on stderr, good input writes the zip.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from jsonschema.validators import validator_for
from PIL import Image

from bot import package
from bot.commands import COMMANDS, HELP_PARAMS, command_names, find_command
from bot.i18n import t

ROOT = Path(__file__).resolve().parents[1]
MANIFEST_DIR = ROOT / "manifest"
SHARED = ROOT / ".." / "shared"
APP_ID = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
OTHER_ID = "9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d"


def sample_info(**changes: Any) -> package.AppInfo:
    values: dict[str, Any] = {"app_id": APP_ID, "version": "1.2.3", "developer": "Contoso Finance IT",
                              "website_url": "https://contoso.example/credits",
                              "privacy_url": "https://contoso.example/privacy",
                              "terms_url": "https://contoso.example/terms"}
    values.update(changes)
    return package.resolve(environ={}, **values)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return json.loads((MANIFEST_DIR / "manifest.template.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def validator(template):
    """A validator of the official schema of the template's manifestVersion."""
    version = template["manifestVersion"]
    path = SHARED / "schemas" / "teams" / f"v{version}" / "MicrosoftTeams.schema.json"
    if not path.is_file():
        pytest.skip(f"the official Teams manifest schema v{version} is not at {path.resolve()} (../shared missing)")
    schema = json.loads(path.read_text(encoding="utf-8"))
    cls = validator_for(schema)
    if version == "1.19":  # v1.29's schema has a \p{L} pattern that Python's re cannot compile (../shared README)
        cls.check_schema(schema)
    return cls(schema)


def schema_errors(validator, manifest: dict[str, Any]) -> list[str]:
    errors = [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
              for e in validator.iter_errors(manifest)]
    # Draft-04 ignores `const`, so the schema alone would take any manifestVersion.
    if manifest.get("manifestVersion") != validator.schema["properties"]["manifestVersion"].get("const"):
        errors.append(f"manifestVersion {manifest.get('manifestVersion')!r} is not the schema's")
    return errors


# --- the manifest -------------------------------------------------------------------------------------------------

def test_the_template_names_the_schema_of_its_manifest_version(template) -> None:
    version = template["manifestVersion"]
    assert version == package.MANIFEST_VERSION
    assert template["$schema"] == (f"https://developer.microsoft.com/json-schemas/teams/v{version}/"
                                   "MicrosoftTeams.schema.json")
    assert tuple(int(p) for p in version.split(".")) >= (1, 19)


@pytest.mark.parametrize("info", [
    pytest.param({}, id="flags"),
    pytest.param({"manifest_id": OTHER_ID, "developer": "x" * 32, "version": "10.0.999"}, id="separate-manifest-id"),
    pytest.param({"website_url": None, "privacy_url": None, "terms_url": None, "developer": None}, id="defaults"),
])
def test_the_generated_manifest_validates_against_the_official_schema(validator, info) -> None:
    manifest = package.build_manifest(sample_info(**info))
    assert schema_errors(validator, manifest) == []
    assert package.check_manifest(manifest) == []


def test_the_generated_manifest_is_a_bot_for_every_scope_that_takes_files() -> None:
    info = sample_info(manifest_id=OTHER_ID)
    manifest = package.build_manifest(info)
    assert manifest["id"] == OTHER_ID and manifest["version"] == "1.2.3"
    [bot] = manifest["bots"]
    assert bot["botId"] == APP_ID
    assert sorted(bot["scopes"]) == sorted(["personal", "team", "groupChat"])
    assert bot["supportsFiles"] is True  # admins drop the usage export into their personal chat
    assert not bot.get("isNotificationOnly")
    assert manifest["developer"] == {"name": "Contoso Finance IT", "websiteUrl": "https://contoso.example/credits",
                                     "privacyUrl": "https://contoso.example/privacy",
                                     "termsOfUseUrl": "https://contoso.example/terms"}
    assert "{{" not in json.dumps(manifest)
    # The Graph permission for usage sync belongs to the app registration, not to the Teams manifest.
    assert "webApplicationInfo" not in manifest and "authorization" not in manifest


def test_the_manifest_id_defaults_to_the_app_id_and_ids_are_lower_case() -> None:
    manifest = package.build_manifest(sample_info(app_id=APP_ID.upper()))
    assert manifest["id"] == manifest["bots"][0]["botId"] == APP_ID


def test_command_lists_agree_with_the_command_table(validator) -> None:
    manifest = package.build_manifest(sample_info())
    [bot] = manifest["bots"]
    lists = bot["commandLists"]
    assert sorted(scope for entry in lists for scope in entry["scopes"]) == sorted(bot["scopes"])
    names = set(command_names())
    for entry in lists:
        assert len(entry["scopes"]) == 1
        titles = [c["title"] for c in entry["commands"]]
        assert 0 < len(titles) <= package.MAX_COMMANDS
        assert len(set(titles)) == len(titles)
        assert titles[0] == "help"
        assert titles == list(package.SCOPE_COMMANDS[entry["scopes"][0]])
        for listed in entry["commands"]:
            assert listed["title"] in names, f"{listed['title']!r} is not a command"
            command = find_command(listed["title"])
            assert command is not None and command.name == listed["title"]
            assert len(listed["title"]) <= package.MAX_TITLE
            assert 0 < len(listed["description"]) <= package.MAX_DESCRIPTION
            summary = t(command.summary, "en", **HELP_PARAMS)
            if command.name in package.DESCRIPTION_OVERRIDES:
                assert listed["description"] == package.DESCRIPTION_OVERRIDES[command.name]
            else:  # the help summary, or its start when a trailing parenthetical had to go
                assert summary.startswith(listed["description"])
                assert listed["description"] == summary or len(summary) > package.MAX_DESCRIPTION


def test_every_command_could_be_listed() -> None:
    """Whatever `SCOPE_COMMANDS` chooses later, each command's title and description fit Teams' limits."""
    for command in COMMANDS:
        assert len(command.name) <= package.MAX_TITLE
        assert 0 < len(package.command_description(command)) <= package.MAX_DESCRIPTION, command.name


def test_a_name_that_is_not_a_command_cannot_be_listed() -> None:
    with pytest.raises(KeyError):
        package.command_lists({"personal": ("help", "balanse")})
    with pytest.raises(KeyError):  # an alias is not the command's name
        package.command_lists({"personal": ("saldo",)})


@pytest.mark.parametrize("breakage, problem, schema_refuses", [
    (lambda m: m["bots"][0]["commandLists"][0]["commands"].extend([{"title": "x", "description": "y"}] * 5),
     "at most 10 commands", True),
    (lambda m: m["bots"][0]["commandLists"][0]["commands"][0].update(title="t" * 33), ".title: 1 to 32", True),
    (lambda m: m["bots"][0]["commandLists"][1]["commands"][0].update(description="d" * 129), "1 to 128", True),
    (lambda m: m["bots"][0].update(botId="not-a-guid"), "bots[0].botId", True),
    (lambda m: m["bots"][0].update(scopes=["groupchat"]), "bots[0].scopes", True),
    (lambda m: m["name"].update(short="n" * 31), "name.short", True),
    (lambda m: m.update(manifestVersion="1.29"), "manifestVersion", True),
    # Stricter than the schema: Teams wants major.minor.patch and https, the schema takes any string and http.
    (lambda m: m.update(version="1.0"), "version:", False),
    (lambda m: m["developer"].update(privacyUrl="http://contoso.example/privacy"), "developer.privacyUrl", False),
    (lambda m: m["description"].update(full="{{DESCRIPTION}}"), "placeholders not filled in: {{DESCRIPTION}}",
     False),
])
def test_check_manifest_reports_what_teams_would_refuse(validator, breakage, problem, schema_refuses) -> None:
    manifest = package.build_manifest(sample_info())
    breakage(manifest)
    problems = package.check_manifest(manifest)
    assert any(problem in p for p in problems), problems
    assert (schema_errors(validator, manifest) != []) is schema_refuses


# --- resolving the inputs -----------------------------------------------------------------------------------------

def test_flags_win_over_the_environment_which_wins_over_defaults() -> None:
    env = {"MicrosoftAppId": OTHER_ID, "TEAMS_APP_DEVELOPER": "From Env", "TEAMS_APP_WEBSITE_URL": "https://e.example",
           "TEAMS_APP_PRIVACY_URL": "", "TEAMS_APP_ID": ""}
    info = package.resolve(app_id=None, developer=None, website_url=None, environ=env)
    assert (info.app_id, info.manifest_id, info.developer, info.website_url) == (OTHER_ID, OTHER_ID, "From Env",
                                                                                 "https://e.example")
    assert info.privacy_url == package.DEFAULT_PRIVACY_URL  # empty counts as unset
    assert info.placeholders == ("TEAMS_APP_PRIVACY_URL", "TEAMS_APP_TERMS_URL")
    info = package.resolve(app_id=APP_ID, developer="Flag", environ=env)
    assert (info.app_id, info.developer) == (APP_ID, "Flag")
    assert package.resolve(app_id=APP_ID, environ={"TEAMS_APP_ID": OTHER_ID}).manifest_id == OTHER_ID


def test_the_version_defaults_to_the_projects() -> None:
    info = package.resolve(app_id=APP_ID, environ={})
    assert info.version == package.project_version()
    assert package.version_problem(info.version) is None


def test_every_bad_input_is_named_in_one_line() -> None:
    with pytest.raises(package.PackageError) as caught:
        package.resolve(app_id="00000000-0000-0000-0000-000000000000", manifest_id="abc", version="v1.0.0",
                        developer="d" * 33, website_url="http://contoso.example", terms_url="not a url",
                        environ={})
    message = str(caught.value)
    assert "\n" not in message
    for part in ("--app-id: the all-zero GUID", "--manifest-id: 'abc' is not a GUID", "--version: 'v1.0.0'",
                 "--developer: at most 32", "--website-url: must be an https URL", "--terms-url:"):
        assert part in message


@pytest.mark.parametrize("version, ok", [("1.0.0", True), ("0.1.0", True), ("10.20.30", True), ("1.0", False),
                                         ("1.0.0-beta", False), ("01.0.0", False), ("1.0.0.0", False), ("", False)])
def test_versions_are_major_minor_patch(version: str, ok: bool) -> None:
    assert (package.version_problem(version) is None) is ok


# --- icons --------------------------------------------------------------------------------------------------------

def load_make_icons() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_icons", MANIFEST_DIR / "make_icons.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rgba_pixels(image: Image.Image) -> list[tuple[int, ...]]:
    data = image.tobytes()
    return [tuple(data[i:i + 4]) for i in range(0, len(data), 4)]


def test_the_colour_icon_is_192_square_and_opaque() -> None:
    with Image.open(MANIFEST_DIR / "color.png") as image:
        assert image.format == "PNG" and image.size == (192, 192)
        rgba = image.convert("RGBA")
    assert set(rgba.getchannel("A").tobytes()) == {255}
    assert len(set(rgba_pixels(rgba))) > 2  # a picture, not a flat square


def test_the_outline_icon_is_32_square_white_on_transparent() -> None:
    with Image.open(MANIFEST_DIR / "outline.png") as image:
        assert image.format == "PNG" and image.size == (32, 32)
        assert image.mode in ("RGBA", "LA")
        pixels = rgba_pixels(image.convert("RGBA"))
    assert all(p[:3] == (255, 255, 255) or p[3] == 0 for p in pixels), "a pixel is neither white nor transparent"
    alphas = [p[3] for p in pixels]
    assert 0 in alphas and 255 in alphas


def test_the_icons_script_reproduces_the_committed_icons_pixel_for_pixel(tmp_path) -> None:
    icons = load_make_icons()
    for name, render in (("color.png", icons.render_color), ("outline.png", icons.render_outline)):
        drawn = render()
        with Image.open(MANIFEST_DIR / name) as committed:
            assert (committed.mode, committed.size) == (drawn.mode, drawn.size), name
            assert committed.tobytes() == drawn.tobytes(), f"{name} differs: run python manifest/make_icons.py"
    written = icons.write_icons(tmp_path)
    assert [p.name for p in written] == ["color.png", "outline.png"]
    for path in written:
        with Image.open(path) as fresh, Image.open(MANIFEST_DIR / path.name) as committed:
            assert fresh.tobytes() == committed.tobytes()


def test_the_accent_colour_is_the_colour_icons_background(template) -> None:
    icons = load_make_icons()
    assert template["accentColor"].upper() == "#" + bytes(icons.ACCENT).hex().upper()
    with Image.open(MANIFEST_DIR / "color.png") as image:
        assert image.convert("RGB").getpixel((0, 0)) == icons.ACCENT


def png(size: tuple[int, int], mode: str) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, format="PNG")
    return buffer.getvalue()


def test_check_icon_reads_size_and_alpha_from_the_header() -> None:
    for name in package.ICONS:
        assert package.check_icon(name, (MANIFEST_DIR / name).read_bytes()) is None
    assert package.check_icon("color.png", png((96, 96), "RGB")) == "must be 192x192 pixels, is 96x96"
    assert package.check_icon("outline.png", png((32, 32), "RGB")) == ("must have an alpha channel "
                                                                       "(white on transparent)")
    assert package.check_icon("outline.png", b"GIF89a" + bytes(40)) == "not a PNG file"


def test_a_bad_icon_stops_the_package(tmp_path) -> None:
    source = tmp_path / "manifest"
    source.mkdir()
    (source / "manifest.template.json").write_bytes((MANIFEST_DIR / "manifest.template.json").read_bytes())
    (source / "color.png").write_bytes((MANIFEST_DIR / "color.png").read_bytes())
    (source / "outline.png").write_bytes(png((64, 64), "RGBA"))
    out = tmp_path / "app.zip"
    with pytest.raises(package.PackageError, match=r"outline\.png: must be 32x32 pixels, is 64x64"):
        package.write_package(sample_info(), out, source)
    assert not out.exists()


# --- the zip ------------------------------------------------------------------------------------------------------

def test_the_zip_holds_exactly_the_validated_manifest_and_the_icons(tmp_path, validator) -> None:
    out = tmp_path / "appPackage.zip"
    manifest = package.write_package(sample_info(), out)
    assert schema_errors(validator, manifest) == []
    with zipfile.ZipFile(out) as archive:
        assert archive.testzip() is None
        assert sorted(archive.namelist()) == ["color.png", "manifest.json", "outline.png"]
        inside = archive.read("manifest.json")
        assert not inside.startswith(b"\xef\xbb\xbf")
        assert json.loads(inside.decode("utf-8")) == manifest
        for name in ("color.png", "outline.png"):
            assert archive.read(name) == (MANIFEST_DIR / name).read_bytes()
    assert schema_errors(validator, json.loads(inside)) == []


def test_the_zip_is_deterministic_and_replaced_whole(tmp_path) -> None:
    first, second = tmp_path / "a.zip", tmp_path / "b.zip"
    package.write_package(sample_info(), first)
    second.write_bytes(b"old contents")
    package.write_package(sample_info(), second)
    assert first.read_bytes() == second.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip", "b.zip"]  # no temporary file left behind


# --- the command line ---------------------------------------------------------------------------------------------

def run_package(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "SYSTEMROOT", "TMPDIR")}
    return subprocess.run([sys.executable, "-m", "bot", "package", *args], capture_output=True, text=True,
                          check=False, timeout=120, cwd=cwd, env={**base, "PYTHONPATH": str(ROOT), **(env or {})})


def test_cli_refuses_a_bad_app_id_with_one_line_and_exit_2(tmp_path) -> None:
    result = run_package("--app-id", "my-bot", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("python -m bot: error: --app-id: 'my-bot' is not a GUID")
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, message", [
    ((), "--app-id: required (the Azure Bot's Microsoft App ID), or set MicrosoftAppId"),
    (("--app-id", APP_ID, "--version", "1.0"), "--version: '1.0' is not major.minor.patch"),
    (("--app-id", APP_ID, "--privacy-url", "http://contoso.example/privacy"), "--privacy-url: must be an https"),
    (("--app-id", APP_ID, "--out", "missing/dir/app.zip"), "--out: directory missing/dir does not exist"),
])
def test_cli_other_bad_arguments_exit_2(tmp_path, args, message) -> None:
    result = run_package(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"python -m bot: error: {message}"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_cli_writes_the_package(tmp_path, validator) -> None:
    # An incomplete bot configuration (an app id without its secret, a public HOST) does not stop packaging.
    env = {"HOST": "0.0.0.0", "TEAMS_APP_WEBSITE_URL": "https://contoso.example/credits"}
    result = run_package("--app-id", APP_ID.upper(), "--version", "2.0.1", "--out", "pkg.zip", "--developer", "Contoso",
                         cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert "package: pkg.zip" in result.stdout and f"bot id: {APP_ID}" in result.stdout
    assert "example.com placeholders" in result.stderr and "TEAMS_APP_PRIVACY_URL" in result.stderr
    with zipfile.ZipFile(tmp_path / "pkg.zip") as archive:
        assert sorted(archive.namelist()) == ["color.png", "manifest.json", "outline.png"]
        manifest = json.loads(archive.read("manifest.json"))
    assert schema_errors(validator, manifest) == []
    assert (manifest["id"], manifest["bots"][0]["botId"], manifest["version"]) == (APP_ID, APP_ID, "2.0.1")
    assert manifest["developer"]["name"] == "Contoso"
    assert manifest["developer"]["websiteUrl"] == "https://contoso.example/credits"


def test_cli_reads_the_app_id_from_dotenv(tmp_path) -> None:
    (tmp_path / ".env").write_text(f"MicrosoftAppId={APP_ID}\nTEAMS_APP_ID={OTHER_ID}\n", encoding="utf-8")
    result = run_package(cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with zipfile.ZipFile(tmp_path / "appPackage.zip") as archive:
        manifest = json.loads(archive.read("manifest.json"))
    assert (manifest["id"], manifest["bots"][0]["botId"]) == (OTHER_ID, APP_ID)
