"""Write spec data as YAML in the shipped specs' style: one line per field, one flow mapping per stage."""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

_YAML11_WORDS = ("y", "n", "yes", "no", "on", "off", "true", "false", "null", "~")


def _scalar(v: object) -> str:
    """A scalar as YAML text that PyYAML (YAML 1.1) and load_yaml (YAML 1.2) both read back as the same value."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        s = repr(v)
        mantissa, e, exp = s.partition("e")
        # YAML 1.1 (PyYAML) reads 1e-05 as text: a float needs a dot, and a signed exponent.
        mantissa = mantissa if "." in mantissa else mantissa + ".0"
        return mantissa + (f"e{exp if exp[0] in '+-' else '+' + exp}" if e else "")
    if isinstance(v, int):
        return str(v)
    s = str(v)
    plain = (s[:1].isalpha() and all(c.isalnum() or c in "_.-" for c in s)) or (s.replace("x", "", 1).isdigit()
                                                                              and "x" in s)
    if plain and s.lower() not in _YAML11_WORDS:
        return s
    return json.dumps(s)


def flow(v: object) -> str:
    """A value as YAML flow text: {a: 1, b: [x, y]}."""
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {flow(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(flow(x) for x in v) + "]"
    return _scalar(v)


def to_yaml(data: Mapping[str, Any], comment: str) -> str:
    """Spec data as YAML in the shipped specs' style: one line per field, one per stage."""
    lines = [f"# {line}" for line in comment.splitlines()]
    for k, v in data.items():
        if k == "stages":
            lines.append("stages:")
            lines += [f"  - {flow(s)}" for s in v]
        else:
            lines.append(f"{k}: {flow(v)}")
    return "\n".join(lines) + "\n"
