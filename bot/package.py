"""`python -m bot package`: the Teams app package, a zip of `manifest.json`, `color.png` and `outline.png`.

The manifest is `manifest/manifest.template.json` (app manifest schema v1.19) with its `{{NAME}}` placeholders
filled in, and with `bots[0].commandLists` built from the command table (`bot.commands.COMMANDS`):

* **Ids.** `bots[0].botId` is the Azure Bot's Microsoft App ID (`--app-id`, else `MicrosoftAppId`). The
  manifest `id`, which identifies the app in a tenant's catalogue, is the same GUID unless `--manifest-id` (or
  `TEAMS_APP_ID`) gives another: keep that one fixed across uploads if the bot registration is ever replaced,
  so the new package updates the installed app instead of adding a second one.
* **Version.** `--version`, default the project's version (pyproject.toml); Teams wants `major.minor.patch` and
  a higher one for every changed package uploaded over an installed one.
* **Developer.** Name and website, privacy and terms-of-use URLs from `--developer`, `--website-url`,
  `--privacy-url`, `--terms-url`, else `TEAMS_APP_DEVELOPER`, `TEAMS_APP_WEBSITE_URL`, `TEAMS_APP_PRIVACY_URL`,
  `TEAMS_APP_TERMS_URL` (environment, then `./.env`; empty counts as unset), else placeholders on example.com
  (a note on stderr says so). URLs must be https.
* **Commands.** Teams shows at most 10 commands per scope (title <= 32, description <= 128 characters), and the
  table has more, so `SCOPE_COMMANDS` chooses; each entry's title is the command's English name and its
  description the English summary `help` shows (a trailing parenthetical is dropped when the summary is too
  long; `DESCRIPTION_OVERRIDES` for `help` itself). Every command still works when typed, and `help` lists
  them all.

Checks before anything is written (`check_manifest`, `check_icon`): the GUIDs, the version, the URLs and every
length and count limit of the schema that the filled-in parts could break, no placeholder left, and the icons
(PNG, 192x192 and 32x32, the outline with an alpha channel). This needs only the standard library: the full
validation against Microsoft's JSON schema is in `tests/test_manifest.py` (jsonschema is a test dependency).
The zip is deterministic: the same inputs give the same bytes.

Errors are one line (`PackageError`); `run` prints them as the other commands do and returns 2.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import struct
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

from dotenv import dotenv_values

from .commands import HELP_PARAMS, Command, find_command
from .i18n import t
from .settings import check_url

PROG = "python -m bot"

#: Where the template and the icons are (the repository's `manifest/`).
MANIFEST_DIR = Path(__file__).resolve().parents[1] / "manifest"
TEMPLATE_NAME = "manifest.template.json"
#: The app manifest schema version of the template.
MANIFEST_VERSION = "1.19"
#: Icon file -> (width, height, needs an alpha channel). Both sit at the zip's root, named as in `icons`.
ICONS: Mapping[str, tuple[int, int, bool]] = {"color.png": (192, 192, False), "outline.png": (32, 32, True)}
#: The files of the package, in the order they are written.
PACKAGE_FILES = ("manifest.json", *ICONS)

#: Teams' limits for `bots[].commandLists` (schema v1.19).
MAX_COMMANDS = 10
MAX_TITLE = 32
MAX_DESCRIPTION = 128
SCOPES = ("personal", "team", "groupChat")

#: The commands each scope lists, in menu order (at most `MAX_COMMANDS`). The rule: personal chat, where an admin
#: works alone, lists the daily routine (read the balance, usage, history and forecast; add funds; auto-recharge
#: and alert settings; subscribe to alerts there) plus `whoami`, the first step to getting a role. Team channels
#: and group chats, shared with finance people who mostly read, list the reading commands plus `subscribe` and
#: `unsubscribe`, since alerts are routed to a conversation from inside it; money moves (`add`, `sync`) and role
#: and currency changes are left to be typed. `help` leads every list.
SCOPE_COMMANDS: Mapping[str, tuple[str, ...]] = {
    "personal": ("help", "balance", "add", "recharge", "alerts", "usage", "history", "forecast", "subscribe",
                 "whoami"),
    "team": ("help", "balance", "usage", "history", "forecast", "recharge", "alerts", "subscribe", "unsubscribe"),
    "groupChat": ("help", "balance", "usage", "history", "forecast", "recharge", "alerts", "subscribe",
                  "unsubscribe"),
}

#: Descriptions that differ from the help summary: `help`'s ("Show this list") refers to the list it prints.
DESCRIPTION_OVERRIDES: Mapping[str, str] = {"help": "List the commands you can use"}

ENV_APP_ID = "MicrosoftAppId"
ENV_MANIFEST_ID = "TEAMS_APP_ID"
ENV_DEVELOPER = "TEAMS_APP_DEVELOPER"
ENV_WEBSITE_URL = "TEAMS_APP_WEBSITE_URL"
ENV_PRIVACY_URL = "TEAMS_APP_PRIVACY_URL"
ENV_TERMS_URL = "TEAMS_APP_TERMS_URL"
DEFAULT_DEVELOPER = "Teams Credits Bot"
DEFAULT_WEBSITE_URL = "https://example.com/teams-credits-bot"
DEFAULT_PRIVACY_URL = "https://example.com/teams-credits-bot/privacy"
DEFAULT_TERMS_URL = "https://example.com/teams-credits-bot/terms"
#: Used when the project's distribution metadata cannot be read (running from an uninstalled checkout).
FALLBACK_VERSION = "1.0.0"

_GUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}", re.ASCII)
_NIL_GUID = "00000000-0000-0000-0000-000000000000"
_VERSION = re.compile(r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)", re.ASCII)
_HEX_COLOR = re.compile(r"#[0-9a-fA-F]{6}", re.ASCII)
_PLACEHOLDER = re.compile(r"\{\{[A-Z_]+\}\}")
_TRAILING_PARENTHETICAL = re.compile(r"\s*\([^()]*\)\s*$")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MAX_URL = 2048


class PackageError(Exception):
    """The package cannot be built; `str()` is one line that says what to change."""


@dataclass(frozen=True, slots=True)
class AppInfo:
    """What the template leaves open, already checked: GUIDs in lower case, `version` as major.minor.patch,
    https URLs. `placeholders` names the developer fields that fell back to the example.com defaults."""

    app_id: str
    manifest_id: str
    version: str
    developer: str
    website_url: str
    privacy_url: str
    terms_url: str
    placeholders: tuple[str, ...] = ()


# --- inputs -------------------------------------------------------------------------------------------------------

def project_version() -> str:
    """The installed project's version (pyproject.toml), or `FALLBACK_VERSION`."""
    try:
        return metadata.version("teams-credits-bot")
    except metadata.PackageNotFoundError:
        return FALLBACK_VERSION


def _shown(value: str, limit: int = 60) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "...")


def guid_problem(value: str) -> str | None:
    """Why `value` is not a usable GUID (8-4-4-4-12 hex digits, not all zero), or None."""
    if not _GUID.fullmatch(value):
        return f"{_shown(value)} is not a GUID (8-4-4-4-12 hex digits, e.g. 3f2504e0-4f89-11d3-9a0c-0305e82c3301)"
    if value == _NIL_GUID:
        return "the all-zero GUID is a placeholder, not an app id"
    return None


def version_problem(value: str) -> str | None:
    """Why `value` is not a Teams app version (major.minor.patch, digits without leading zeros), or None."""
    if not _VERSION.fullmatch(value):
        return f"{_shown(value)} is not major.minor.patch (e.g. 1.0.0; Teams takes no prefix or pre-release suffix)"
    return None


def resolve(*, app_id: str | None, manifest_id: str | None = None, version: str | None = None,
            developer: str | None = None, website_url: str | None = None, privacy_url: str | None = None,
            terms_url: str | None = None, environ: Mapping[str, str] | None = None) -> AppInfo:
    """The `AppInfo` from command-line values (None: not given), falling back to `environ` and the defaults
    described in the module docstring. Raises one `PackageError` naming every problem."""
    env = {k: v for k, v in (environ or {}).items() if v != ""}
    problems: list[str] = []
    placeholders: list[str] = []

    def pick(given: str | None, name: str, default: str | None = None) -> str | None:
        if given is not None and given.strip() != "":
            return given.strip()
        if name in env:
            return env[name].strip()
        return default

    app = pick(app_id, ENV_APP_ID)
    if app is None:
        problems.append(f"--app-id: required (the Azure Bot's Microsoft App ID), or set {ENV_APP_ID}")
    elif (why := guid_problem(app)) is not None:
        problems.append(f"--app-id: {why}")
    manifest = pick(manifest_id, ENV_MANIFEST_ID)
    if manifest is None:
        manifest = app
    elif (why := guid_problem(manifest)) is not None:
        problems.append(f"--manifest-id: {why}")
    ver = version.strip() if version is not None and version.strip() else project_version()
    if (why := version_problem(ver)) is not None:
        problems.append(f"--version: {why}")
    name = pick(developer, ENV_DEVELOPER)
    if name is None:
        name = DEFAULT_DEVELOPER
    elif len(name) > 32:
        problems.append(f"--developer: at most 32 characters, got {len(name)}")
    urls: dict[str, str] = {}
    for flag, env_name, default, given in (
            ("--website-url", ENV_WEBSITE_URL, DEFAULT_WEBSITE_URL, website_url),
            ("--privacy-url", ENV_PRIVACY_URL, DEFAULT_PRIVACY_URL, privacy_url),
            ("--terms-url", ENV_TERMS_URL, DEFAULT_TERMS_URL, terms_url)):
        url = pick(given, env_name)
        if url is None:
            placeholders.append(env_name)
            url = default
        elif (why := check_url(url, https_only=True, loopback_http=False)) is not None:
            problems.append(f"{flag}: {why}")
        elif len(url) > _MAX_URL:
            problems.append(f"{flag}: at most {_MAX_URL} characters")
        urls[flag] = url
    if problems:
        raise PackageError("; ".join(problems))
    assert app is not None and manifest is not None
    return AppInfo(app_id=app.lower(), manifest_id=manifest.lower(), version=ver, developer=name,
                   website_url=urls["--website-url"], privacy_url=urls["--privacy-url"],
                   terms_url=urls["--terms-url"], placeholders=tuple(placeholders))


# --- the manifest -------------------------------------------------------------------------------------------------

def command_description(command: Command) -> str:
    """The manifest description of `command`: `DESCRIPTION_OVERRIDES`, else its English help summary; when that
    is longer than `MAX_DESCRIPTION`, without its trailing parenthetical."""
    if command.name in DESCRIPTION_OVERRIDES:
        return DESCRIPTION_OVERRIDES[command.name]
    text = t(command.summary, "en", **HELP_PARAMS)
    if len(text) > MAX_DESCRIPTION:
        text = _TRAILING_PARENTHETICAL.sub("", text)
    return text


def command_lists(scope_commands: Mapping[str, tuple[str, ...]] = SCOPE_COMMANDS) -> list[dict[str, Any]]:
    """`bots[0].commandLists`: one list per scope, `{"title": name, "description": ...}` per command.
    `KeyError` for a name that is not a command (a bug)."""
    lists = []
    for scope, names in scope_commands.items():
        commands = []
        for name in names:
            command = find_command(name)
            if command is None or command.name != name:
                raise KeyError(f"{name!r} is not the name of a command in bot.commands.COMMANDS")
            commands.append({"title": command.name, "description": command_description(command)})
        lists.append({"scopes": [scope], "commands": commands})
    return lists


def load_template(source: Path = MANIFEST_DIR) -> dict[str, Any]:
    """The parsed template in `source`; `PackageError` if it is missing or not a JSON object."""
    path = source / TEMPLATE_NAME
    try:
        template = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PackageError(f"no manifest template at {path} (run from a checkout of the project)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PackageError(f"manifest template {path}: {exc}") from None
    if not isinstance(template, dict):
        raise PackageError(f"manifest template {path}: not a JSON object")
    return template


def build_manifest(info: AppInfo, template: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The manifest: `template` (default: the one in `MANIFEST_DIR`) with every string value that is exactly a
    placeholder replaced, and `bots[0].commandLists` set. Pure apart from reading the default template."""
    values = {"{{APP_ID}}": info.app_id, "{{MANIFEST_ID}}": info.manifest_id, "{{VERSION}}": info.version,
              "{{DEVELOPER_NAME}}": info.developer, "{{WEBSITE_URL}}": info.website_url,
              "{{PRIVACY_URL}}": info.privacy_url, "{{TERMS_URL}}": info.terms_url}

    def fill(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: fill(v) for k, v in node.items()}
        if isinstance(node, list):
            return [fill(v) for v in node]
        if isinstance(node, str):
            return values.get(node, node)
        return node

    manifest: dict[str, Any] = fill(load_template() if template is None else template)
    bots = manifest.get("bots")
    if isinstance(bots, list) and bots and isinstance(bots[0], dict):
        bots[0]["commandLists"] = command_lists()
    return manifest


def check_manifest(manifest: Mapping[str, Any]) -> list[str]:
    """Problems of `manifest` that Teams would refuse (empty: none found): the fields the package fills in and
    the schema's limits on them, the icons' names, one bot with its command lists, no placeholder left. Not a
    full schema validation."""
    problems: list[str] = []

    def text(path: str, value: Any, limit: int) -> None:
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{path}: missing")
        elif len(value) > limit:
            problems.append(f"{path}: at most {limit} characters, got {len(value)}")

    if manifest.get("manifestVersion") != MANIFEST_VERSION:
        problems.append(f"manifestVersion: expected {MANIFEST_VERSION!r}, got {manifest.get('manifestVersion')!r}")
    for path, value in (("id", manifest.get("id")), ("version", manifest.get("version"))):
        check = guid_problem if path == "id" else version_problem
        why = check(value) if isinstance(value, str) else "missing"
        if why:
            problems.append(f"{path}: {why}")
    developer = _object(manifest.get("developer"))
    text("developer.name", developer.get("name"), 32)
    for key in ("websiteUrl", "privacyUrl", "termsOfUseUrl"):
        url = developer.get(key)
        why = check_url(url, https_only=True, loopback_http=False) if isinstance(url, str) else "missing"
        if why or len(url) > _MAX_URL:
            problems.append(f"developer.{key}: {why or f'at most {_MAX_URL} characters'}")
    name, description = _object(manifest.get("name")), _object(manifest.get("description"))
    text("name.short", name.get("short"), 30)
    text("name.full", name.get("full"), 100)
    text("description.short", description.get("short"), 80)
    text("description.full", description.get("full"), 4000)
    if manifest.get("icons") != {"color": "color.png", "outline": "outline.png"}:
        problems.append("icons: must be {\"color\": \"color.png\", \"outline\": \"outline.png\"}")
    if not isinstance(manifest.get("accentColor"), str) or not _HEX_COLOR.fullmatch(manifest["accentColor"]):
        problems.append("accentColor: must be #RRGGBB")
    bots = manifest.get("bots")
    if not isinstance(bots, list) or len(bots) != 1 or not isinstance(bots[0], dict):
        problems.append("bots: must hold exactly one bot")
    else:
        problems += _check_bot(bots[0])
    leftover = sorted(set(_PLACEHOLDER.findall(json.dumps(manifest))))
    if leftover:
        problems.append(f"placeholders not filled in: {', '.join(leftover)}")
    return problems


def _object(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _check_bot(bot: Mapping[str, Any]) -> list[str]:
    problems = []
    why = guid_problem(bot["botId"]) if isinstance(bot.get("botId"), str) else "missing"
    if why:
        problems.append(f"bots[0].botId: {why}")
    scopes = bot.get("scopes")
    if not isinstance(scopes, list) or not scopes or not set(scopes) <= set(SCOPES) or len(set(scopes)) != len(scopes):
        problems.append(f"bots[0].scopes: a non-empty list of distinct values of {', '.join(SCOPES)}")
    lists = bot.get("commandLists", [])
    if not isinstance(lists, list) or len(lists) > len(SCOPES):
        return [*problems, f"bots[0].commandLists: at most {len(SCOPES)} lists"]
    for i, entry in enumerate(lists):
        where = f"bots[0].commandLists[{i}]"
        commands = entry.get("commands") if isinstance(entry, dict) else None
        if not isinstance(commands, list) or not entry.get("scopes"):
            problems.append(f"{where}: needs scopes and commands")
            continue
        if len(commands) > MAX_COMMANDS:
            problems.append(f"{where}: at most {MAX_COMMANDS} commands, got {len(commands)}")
        for j, command in enumerate(commands):
            title, text = command.get("title"), command.get("description")
            if not isinstance(title, str) or not 0 < len(title) <= MAX_TITLE:
                problems.append(f"{where}.commands[{j}].title: 1 to {MAX_TITLE} characters")
            if not isinstance(text, str) or not 0 < len(text) <= MAX_DESCRIPTION:
                problems.append(f"{where}.commands[{j}].description ({title}): 1 to {MAX_DESCRIPTION} characters")
    return problems


# --- icons and the zip --------------------------------------------------------------------------------------------

def check_icon(name: str, data: bytes) -> str | None:
    """Why `data` is not a usable icon `name` (a key of `ICONS`), or None: a PNG of the required size, 8 bits per
    channel, with an alpha channel where one is required. Reads the PNG header only (no pixels)."""
    width, height, alpha = ICONS[name]
    if len(data) < 33 or not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return "not a PNG file"
    got_w, got_h, depth, colour_type = struct.unpack(">IIBB", data[16:26])
    if (got_w, got_h) != (width, height):
        return f"must be {width}x{height} pixels, is {got_w}x{got_h}"
    if depth != 8:
        return f"must have 8 bits per channel, has {depth}"
    if alpha and colour_type not in (4, 6):
        return "must have an alpha channel (white on transparent)"
    return None


def read_icons(source: Path = MANIFEST_DIR) -> dict[str, bytes]:
    """The icon files of `source`, checked; `PackageError` for a missing or unusable one."""
    icons = {}
    for name in ICONS:
        try:
            data = (source / name).read_bytes()
        except OSError as exc:
            raise PackageError(f"icon {source / name}: {exc.strerror or exc}") from None
        if (why := check_icon(name, data)) is not None:
            raise PackageError(f"icon {source / name}: {why}")
        icons[name] = data
    return icons


def manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    """`manifest.json` as written to the package: UTF-8 without BOM, 2-space indents, a final newline."""
    return (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def package_bytes(manifest: Mapping[str, Any], icons: Mapping[str, bytes]) -> bytes:
    """The zip: `PACKAGE_FILES` at its root, deflated, with a fixed timestamp so equal inputs give equal bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in PACKAGE_FILES:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, manifest_bytes(manifest) if name == "manifest.json" else icons[name])
    return buffer.getvalue()


def write_package(info: AppInfo, out: Path, source: Path = MANIFEST_DIR) -> dict[str, Any]:
    """Build, check and write the package for `info` to `out` (replaced atomically); return the manifest.
    `PackageError` if a check fails or `out` cannot be written."""
    manifest = build_manifest(info, load_template(source))
    problems = check_manifest(manifest)
    if problems:
        raise PackageError(f"the manifest would not be valid: {'; '.join(problems)}")
    data = package_bytes(manifest, read_icons(source))
    target = out.resolve()
    if target.is_dir():
        raise PackageError(f"--out: {out} is a directory; name the .zip file to write")
    if not target.parent.is_dir():
        raise PackageError(f"--out: directory {out.parent} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise PackageError(f"--out: cannot write {out}: {exc.strerror or exc}") from None
    return manifest


# --- the command --------------------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `package` command's options."""
    parser.add_argument("--app-id", help=f"the Azure Bot's Microsoft App ID (GUID; default {ENV_APP_ID})")
    parser.add_argument("--manifest-id", help=f"the app's id in the Teams catalogue (GUID; default {ENV_MANIFEST_ID}, "
                                              "else the app id)")
    parser.add_argument("--version", help="app version, major.minor.patch (default: the project's version); raise "
                                          "it for every changed package")
    parser.add_argument("--out", type=Path, default=Path("appPackage.zip"), help="zip to write "
                                                                                 "(default appPackage.zip)")
    parser.add_argument("--developer", help=f"developer name, at most 32 characters (default {ENV_DEVELOPER}, "
                                            f"else {DEFAULT_DEVELOPER!r})")
    parser.add_argument("--website-url", help=f"https URL of the support page (default {ENV_WEBSITE_URL})")
    parser.add_argument("--privacy-url", help=f"https URL of the privacy statement (default {ENV_PRIVACY_URL})")
    parser.add_argument("--terms-url", help=f"https URL of the terms of use (default {ENV_TERMS_URL})")


def environment(environ: Mapping[str, str] | None = None) -> Mapping[str, str]:
    """`environ` if given (tests); else `./.env` (if present) overlaid by the process environment."""
    if environ is not None:
        return environ
    dotenv = Path.cwd() / ".env"
    from_file = {k: v for k, v in dotenv_values(dotenv).items() if v is not None} if dotenv.is_file() else {}
    return {**from_file, **os.environ}


def run(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> int:
    """`python -m bot package`: write the package and print what it holds; 2 with a one-line error on stderr."""
    try:
        info = resolve(app_id=args.app_id, manifest_id=args.manifest_id, version=args.version,
                       developer=args.developer, website_url=args.website_url, privacy_url=args.privacy_url,
                       terms_url=args.terms_url, environ=environment(environ))
        manifest = write_package(info, args.out)
    except PackageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    print(f"package: {args.out}")
    print(f"bot id: {info.app_id}")
    print(f"manifest id: {info.manifest_id}")
    print(f"version: {info.version} (manifest schema {manifest['manifestVersion']})")
    for entry in manifest["bots"][0]["commandLists"]:
        print(f"commands ({', '.join(entry['scopes'])}): {', '.join(c['title'] for c in entry['commands'])}")
    if info.placeholders:
        print(f"{PROG}: note: example.com placeholders used for the developer URLs; set "
              f"{', '.join(info.placeholders)} (or the --*-url options) before publishing", file=sys.stderr)
    return 0

