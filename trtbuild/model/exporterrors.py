"""torch.export / ONNX exporter failures as one readable user error block (no traceback).

torch's own text is kept (the constraint, its suggested fixes, the model's file and line), with
the wrapper's argument names (`L['inputs'][0]`, `L['args'][0]`) rewritten to the recipe's input
names, torch's logging hints dropped, and the whole bounded to MAX_LINES lines.
"""

from __future__ import annotations

import re
import sysconfig
import traceback
from pathlib import Path

from trtbuild.errors import TrtbuildError

MAX_LINES = 40
# Lines that tell how to get more logs from torch, not what is wrong with the model.
NOISE = (
    "For more information, run with",
    "For extended logs",
    "If you suspect the guard was triggered",
    "For more debugging help",
    "For C++ stack trace",
    "The error above occurred when calling torch.export",
    "Caused by: (",
    "Set TORCHDYNAMO_VERBOSE",
    "from user code:",
    "## Exception summary",
    "- If there is a missing ONNX function",
    "- If there is an internal error during ONNX conversion",
    "- Create an error report with",
    "(Refer to the full stack trace",
    "\u2b06",  # the ONNX exporter's arrow between chained errors
)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TIDY = [
    (re.compile(r"<class '(?:[\w.]+\.)?(\w+)'>"), r"\1"),  # <class 'torch...DispatchError'>
    (re.compile(r"\s*This is step \d/\d of exporting the model to ONNX\. Next steps:"), ""),
    (re.compile(r"\s*For more information, run with TORCH_LOGS=\S*"), ""),
]
# What to do about the commonest rejections, in trtbuild's terms.
HINTS = [
    (
        "data-dependent",
        "hint: an engine runs one graph for every input: branch with torch.where (or "
        "torch.cond), not with a Python `if` on a tensor's value",
    ),
    (
        "specialized it to be a constant",
        "hint: the model fixes that axis to one size: declare it static in the recipe "
        "(min = opt = max), or make the model accept any size there",
    ),
    (
        "No ONNX function found",
        "hint: the ONNX exporter has no translation for that op; replace it in the model",
    ),
]
_WRAPPER_ARG = re.compile(
    r"L\['(?:inputs|args)'\]\[0\]\[(\d+)\]|L\['(?:inputs|args)'\]\[(\d+)\]|\binputs\[(\d+)\]"
)
_LIBRARIES = (
    "site-packages",
    "dist-packages",
    sysconfig.get_paths()["stdlib"],
    str(Path(__file__).resolve().parents[1]),  # trtbuild itself
)


def explain(
    exc: BaseException, where: str, input_names: list[str], frames: list[str] | None = None
) -> TrtbuildError:
    """The user error for an exporter's `exc`: first line `where: <Type>: <cause>`, then torch's
    further lines and, when torch gave none, the model's own file and line (`frames`, else the
    traceback's deepest frame in the model's code), and a hint for the common rejections."""
    text = _ANSI.sub("", str(exc).strip())
    for pattern, replacement in _TIDY:
        text = pattern.sub(replacement, text)
    lines = [_rename(line, input_names) for line in text.splitlines()]
    lines = [line for line in lines if not line.strip().startswith(NOISE)]
    first = lines[0] if lines else ""
    rest = _squeeze(lines[1:])
    if not any(line.lstrip().startswith('File "') for line in rest):
        rest += frames or _model_frame(exc)
    if len(rest) > MAX_LINES:
        rest = [*rest[:MAX_LINES], f"... ({len(rest) - MAX_LINES} more lines)"]
    rest += [hint for key, hint in HINTS if key in text][:1]
    return TrtbuildError(f"{where}: {type(exc).__name__}: {first}", "\n".join(rest))


def node_frames(text: str, nodes: dict[str, str]) -> list[str]:
    """The model's file and line of the first graph node `%name` that `text` names, from
    `nodes` (node name -> its stack_trace as torch.export records it)."""
    named = re.findall(r"node %(\w+)", text) + re.findall(r"%(\w+)", text)
    for name in named:
        lines = (nodes.get(name) or "").rstrip().splitlines()
        for i in range(len(lines) - 1, -1, -1):
            line = lines[i].strip()
            if line.startswith('File "') and not any(lib in line for lib in _LIBRARIES):
                code = lines[i + 1].strip() if i + 1 < len(lines) else ""
                return [f"  {line}", f"    {code}"]
    return []


def _rename(line: str, names: list[str]) -> str:
    def name(match: re.Match[str]) -> str:
        index = int(next(g for g in match.groups() if g is not None))
        return names[index] if index < len(names) else match.group(0)

    return _WRAPPER_ARG.sub(name, line)


def _squeeze(lines: list[str]) -> list[str]:
    """No leading, trailing or repeated blank lines."""
    out: list[str] = []
    for line in lines:
        if line.strip() or (out and out[-1].strip()):
            out.append(line.rstrip())
    while out and not out[-1].strip():
        out.pop()
    return out


def _model_frame(exc: BaseException) -> list[str]:
    """The deepest traceback frame outside torch, other libraries and trtbuild: the model's line."""
    seen: BaseException | None = exc
    for _ in range(5):  # the exception, then what it was raised from
        if seen is None:
            break
        frames = [
            f
            for f in traceback.extract_tb(seen.__traceback__)
            if not any(lib in f.filename for lib in _LIBRARIES) and not f.filename.startswith("<")
        ]
        if frames:
            f = frames[-1]
            return [f'  File "{f.filename}", line {f.lineno}, in {f.name}', f"    {f.line or ''}"]
        seen = seen.__cause__ or seen.__context__
    return []
