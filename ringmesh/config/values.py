"""Values of a config file and how they are read: rates with units, host:port addresses,
numbers in range, TLS file paths, directories; the error that names the file and the key."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Mapping

from ringmesh.core.catalog import FILE_TYPES
from ringmesh.core.errors import RingmeshError

BUILTIN_MB_PER_S = 20
MB = 1_000_000
BUILTIN_SCRUB_RATE = 4 * MB  # bytes/s of disk a scrub reads (node/scrub.py): a budget of its own
MAX_RATE_BYTES_PER_S = 10**12  # 1 TB/s: anything above is a unit mistake
BUILTIN = "built-in default"
_HOSTPORT = re.compile(r"^(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.\-]+):(?P<port>\d{1,5})$")
_TLS_FILES = ("ca", "cert", "key")
_TLS_EXPECTED = "off, or a mapping of ca, cert and key to PEM file paths ('{node}' stands for the host's name)"


class ConfigError(RingmeshError):
    """The config file or an override is invalid; the message says where and why."""


@dataclass(frozen=True, slots=True)
class TlsPaths:
    """Where a host's TLS files are: the cluster CA's certificate, the host's certificate and key.
    `sources`: file -> the config key it came from."""

    ca: str
    cert: str
    key: str
    sources: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False)

    def files(self) -> dict[str, str]:
        return {"ca": self.ca, "cert": self.cert, "key": self.key}


def _err(path: str, key: str, expected: str, got: Any) -> ConfigError:
    return ConfigError(f"{path}: {key}: expected {expected}, got {got!r}")


def _number(path: str, key: str, v: Any, *, lo: float, hi: float, integer: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise _err(path, key, f"a number in [{lo}, {hi}]", v)
    try:
        x = int(v) if integer else float(v)
    except ValueError:
        raise _err(path, key, f"a number in [{lo}, {hi}]", v) from None
    if not lo <= x <= hi:
        raise _err(path, key, f"a number in [{lo}, {hi}]", v)
    return x


def check_address(path: str, key: str, v: Any) -> str:
    if not isinstance(v, str) or not (m := _HOSTPORT.match(v)) or not 0 < int(m["port"]) < 65536:
        raise _err(path, key, "host:port", v)
    return v


_RATE = re.compile(r"^(?P<num>[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*(?P<unit>.*?)$")
_UNIT = re.compile(r"^(?P<prefix>[kKMGT]i?|)(?P<base>bits?|B|bytes?)/s$")
_PREFIX = {
    "": 1,
    "k": 10**3,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}
_RATE_EXAMPLES = (
    "a number of MB/s (10^6 bytes/s) or a rate with units such as '50MB/s', '400Mbit/s', '100MiB/s', '800 Kbit/s'"
)


def parse_rate(path: str, key: str, v: Any) -> int:
    """A bandwidth as an int number of bytes per second. Bare numbers are MB/s (10^6 bytes/s);
    units: [k|K|M|G|T (SI, 10^3n) | Ki|Mi|Gi|Ti (IEC, 2^10n)] + bit|B|byte + /s."""
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise _err(path, key, _RATE_EXAMPLES, v)
    m = _RATE.match(str(v).strip())
    if not m:
        raise _err(path, key, _RATE_EXAMPLES, v)
    unit = m["unit"]
    if not unit:
        bytes_per_s = Fraction(m["num"]) * MB
    elif u := _UNIT.match(unit):
        bytes_per_s = Fraction(m["num"]) * _PREFIX[u["prefix"]] * (Fraction(1, 8) if u["base"].startswith("bit") else 1)
    elif re.fullmatch(r"([kKMGT]i?)?(b/s|bps|Bps)", unit):
        p = unit[: len(unit) - 3]
        raise _err(path, key, f"an unambiguous unit: '{p}bit/s' (bits) or '{p}B/s' (bytes), not {unit!r}", v)
    elif re.fullmatch(r"([kKMGT]i?)?(bits?|B|bytes?)", unit):
        raise _err(path, key, f"a rate, not a size: write '{unit}/s'", v)
    else:
        raise _err(path, key, f"{_RATE_EXAMPLES} (unknown unit {unit!r})", v)
    if bytes_per_s <= 0:
        raise _err(path, key, "a rate > 0", v)
    n = int(bytes_per_s + Fraction(1, 2))  # nearest byte
    if n < 1 or n > MAX_RATE_BYTES_PER_S:
        raise _err(path, key, "a rate from 1 B/s to 1 TB/s", v)
    return n


def format_rate(bytes_per_s: int) -> str:
    """Bytes/s as an exact decimal MB/s figure with its unit, e.g. '52.4288 MB/s'."""
    whole, rest = divmod(bytes_per_s, MB)
    return f"{whole}.{rest:06d}".rstrip("0").rstrip(".") + " MB/s"


def _tls(path: str, key: str, v: Any, base: TlsPaths | None, warnings: list[str]) -> TlsPaths | None:
    """`ringmesh.tls` (base None): absent or off -> None (plaintext), else all three files;
    `hosts.X.tls` (base given): any of the three, over the global ones."""
    if base is None and (v is None or v is False or v == "off"):
        return None
    if not isinstance(v, dict):
        raise _err(path, key, _TLS_EXPECTED if base is None else "a mapping of any of ca, cert, key to file paths", v)
    warnings += [f"{path}: {key}.{k}: unknown key, ignored" for k in v if k not in _TLS_FILES]
    files = base.files() if base else {}
    srcs = dict(base.sources) if base else {}
    for k in _TLS_FILES:
        if k in v:
            if not isinstance(v[k], str) or not v[k].strip():
                raise _err(path, f"{key}.{k}", "a file path (a non-empty string)", v[k])
            files[k], srcs[k] = v[k], f"{key}.{k}"
        elif base is None:
            raise _err(path, f"{key}.{k}", f"a file path ({key} needs ca, cert and key)", None)
    return TlsPaths(**files, sources=srcs)


def _expand_tls(path: str, t: TlsPaths, node: str) -> TlsPaths:
    """'{node}' -> the host's name, '~' -> home; relative paths are relative to the config's folder."""
    base = Path(path).parent
    out = {}
    for k, p in t.files().items():
        q = Path(os.path.expanduser(p.replace("{node}", node)))
        out[k] = str(q if q.is_absolute() else base / q)
    return TlsPaths(**out, sources=t.sources)


def _paths(path: str, key: str, v: Any, warnings: list[str]) -> dict[str, str]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise _err(path, key, f"a mapping of file type ({' | '.join(FILE_TYPES)}) to directory", v)
    out = {}
    for t, d in v.items():
        if t not in FILE_TYPES:
            warnings.append(f"{path}: {key}.{t}: unknown file type, ignored (known: {', '.join(FILE_TYPES)})")
        elif not isinstance(d, str) or not d.strip():
            raise _err(path, f"{key}.{t}", "a directory path (a non-empty string)", d)
        else:
            out[t] = d
    return out


CHANGED_FILE_MODES = ("keep", "adopt")


def _changed_files(path: str, key: str, v: Any) -> dict[str, str]:
    """What to do with an installed file changed behind ringmesh's back, per file type ("*": the
    rest): `keep` (retract the holding, move the file aside untouched, pull the version again
    if it is still placed here) or `adopt` (publish the changed file as a new version)."""
    if v is None:
        return {"*": "keep"}
    if isinstance(v, str):
        v = {"*": v}
    if not isinstance(v, dict):
        raise _err(path, key, "keep | adopt, or a mapping of file type ('*': the rest) to keep | adopt", v)
    out = {"*": "keep"}
    for t, mode in v.items():
        if t != "*" and t not in FILE_TYPES:
            raise _err(path, f"{key}.{t}", f"a file type ({' | '.join(FILE_TYPES)}) or '*'", t)
        if mode not in CHANGED_FILE_MODES:
            raise _err(path, f"{key}.{t}", " | ".join(CHANGED_FILE_MODES), mode)
        out[str(t)] = mode
    return out


def _names(path: str, key: str, v: Any) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise _err(path, key, "a list of host names", v)
    return v
