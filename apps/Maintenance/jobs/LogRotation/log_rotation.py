"""Rotate the logs of one folder by size and/or age; ``--test`` and ``--dry-run``
(``JOBHOST_DRY_RUN=1``) list what would be done and change nothing.

For ``app.log``: the oldest copies beyond ``Keep`` are deleted, ``app.log.N`` moves
to ``.N+1``, the live file becomes ``app.log.1`` and an empty ``app.log`` takes its
place (or, with ``CopyTruncate``, is copied to ``.1`` and truncated in place, for
programs that keep the file open; lines written between the copy and the truncate
are lost, as with logrotate's copytruncate). ``.1`` stays plain because a program
may still be finishing writes into it; ``.2`` and older are gzipped.

Safety: the job works inside one folder only. ``Folder`` itself may be a symlink
(log folders are often moved to another disk and linked back): it is resolved
once and everything happens inside the resolved folder. Inside it, symlinks are
never followed: a matching symlink, or a log whose rotated copies include one, is
skipped and reported, and so is a file with several hard links (truncating or
compressing it would change a file that also lives elsewhere). The age rule uses
the last modification time: a log nobody wrote to for ``MaxAgeDays`` is rotated.
Rotated names (``*.N``, ``*.N.gz``) are never rotated again, whatever ``Pattern``.
"""

from __future__ import annotations

import fnmatch
import gzip
import os
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from jobhost.job import context, set_result

ROTATED = re.compile(r".*\.\d+(\.gz)?")
DAY = 86_400


@dataclass(frozen=True)
class Step:
    """One file operation, by name inside the folder."""

    op: str  # delete | rename | compress | rotate | copytruncate
    path: str
    to: str | None = None

    def describe(self) -> str:
        return f"{self.op} {self.path}" + (f" -> {self.to}" if self.to else "")


@dataclass(frozen=True)
class Rules:
    pattern: str
    max_bytes: int
    max_age_days: int
    keep: int
    copytruncate: bool


def flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def reason_to_rotate(stat: os.stat_result, rules: Rules, now: float) -> str | None:
    if stat.st_size == 0:
        return None  # nothing to keep
    if rules.max_bytes and stat.st_size > rules.max_bytes:
        return f"{stat.st_size} bytes > MaxBytes {rules.max_bytes}"
    age_days = (now - stat.st_mtime) / DAY
    if rules.max_age_days and age_days > rules.max_age_days:
        return f"last written {age_days:.1f} days ago > MaxAgeDays {rules.max_age_days}"
    return None


def refusal(entry: Path, folder: Path) -> str | None:
    """Why this file must not be touched, or None."""
    if entry.is_symlink():
        return f"symlink to {os.readlink(entry)}; symlinks are never rotated"
    if entry.resolve().parent != folder:
        return "resolves outside the folder"
    stat = entry.lstat()
    if stat.st_nlink > 1:
        return f"has {stat.st_nlink} hard links; rotating it would change a file outside the folder"
    return None


def rotated_copies(folder: Path, name: str) -> dict[int, list[str]]:
    """``{N: [names]}`` of ``name.N`` and ``name.N.gz`` in the folder."""
    pattern = re.compile(rf"{re.escape(name)}\.(\d+)(\.gz)?")
    copies: dict[int, list[str]] = {}
    for entry in folder.iterdir():
        match = pattern.fullmatch(entry.name)
        if match:
            copies.setdefault(int(match.group(1)), []).append(entry.name)
    return copies


def plan_for(name: str, copies: dict[int, list[str]], rules: Rules) -> list[Step]:
    steps: list[Step] = []
    for number in sorted(copies, reverse=True):
        for copy in sorted(copies[number]):
            if number >= rules.keep:
                steps.append(Step("delete", copy))
            else:
                gz = ".gz" if copy.endswith(".gz") else ""
                steps.append(Step("rename", copy, f"{name}.{number + 1}{gz}"))
    if 1 in copies and rules.keep > 1 and f"{name}.1" in copies[1]:
        steps.append(Step("compress", f"{name}.2", f"{name}.2.gz"))
    steps.append(Step("copytruncate" if rules.copytruncate else "rotate", name, f"{name}.1"))
    return steps


def plan(folder: Path, rules: Rules, now: float) -> tuple[list[Step], list[dict[str, str]], int]:
    """Steps for every log due, the files skipped with why, and how many matched."""
    steps: list[Step] = []
    skipped: list[dict[str, str]] = []
    matched = 0
    for entry in sorted(folder.iterdir()):
        if not fnmatch.fnmatchcase(entry.name, rules.pattern) or ROTATED.fullmatch(entry.name):
            continue
        matched += 1
        why_not = refusal(entry, folder)
        if why_not is None and not entry.is_file():
            why_not = "not a regular file"
        copies = rotated_copies(folder, entry.name)
        links = [
            copy for names in copies.values() for copy in names if (folder / copy).is_symlink()
        ]
        if why_not is None and links:
            why_not = f"rotated copy {links[0]} is a symlink; refusing to touch this log"
        if why_not is not None:
            skipped.append({"file": entry.name, "reason": why_not})
            continue
        why = reason_to_rotate(entry.stat(), rules, now)
        if why is not None:
            print(f"{entry.name}: {why}")
            steps += plan_for(entry.name, copies, rules)
    return steps, skipped, matched


def inside(folder: Path, name: str) -> Path:
    path = folder / name
    if "/" in name or path.parent != folder or path.is_symlink():
        raise OSError(f"refusing {name!r}: not a plain file name inside {folder}")
    return path


def apply(folder: Path, step: Step) -> None:
    source = inside(folder, step.path)
    target = inside(folder, step.to) if step.to else None
    if target is not None and target.exists():
        raise OSError(f"refusing to overwrite {target}")
    if step.op == "delete":
        source.unlink()
    elif step.op == "rename" and target is not None:
        os.rename(source, target)
    elif step.op == "compress" and target is not None:
        partial = target.with_name(f".{target.name}.partial")
        with source.open("rb") as raw, gzip.open(partial, "wb") as packed:
            shutil.copyfileobj(raw, packed)
        shutil.copystat(source, partial)
        os.replace(partial, target)
        source.unlink()
    elif step.op == "rotate" and target is not None:
        mode = source.stat().st_mode & 0o7777
        os.rename(source, target)
        os.close(os.open(source, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode))
        os.chmod(source, mode)  # the umask must not narrow the log's permissions
    elif step.op == "copytruncate" and target is not None:
        shutil.copy2(source, target)
        with source.open("r+b") as live:
            live.truncate(0)  # same inode: a writer in append mode carries on at offset 0


def main() -> int:
    variables = context.variables
    dry_run = context.test or context.dry_run
    given = Path(str(variables["Folder"]))
    folder = given.resolve()
    rules = Rules(
        pattern=str(variables.get("Pattern", "*.log")),
        max_bytes=int(variables.get("MaxBytes", 10 * 1024 * 1024)),
        max_age_days=int(variables.get("MaxAgeDays", 0)),
        keep=int(variables.get("Keep", 5)),
        copytruncate=flag(variables.get("CopyTruncate", False)),
    )
    if given.is_symlink():
        print(f"Folder {given} is a symlink; working inside {folder}")
    print(f"{'Dry run: ' if dry_run else ''}rotating {rules.pattern} in {folder}", flush=True)
    steps, skipped, matched = plan(folder, rules, time.time())
    for skip in skipped:
        print(f"[skipped] {skip['file']}: {skip['reason']}")
    done: list[Step] = []
    failure: str | None = None
    for step in steps:
        if dry_run:
            print(f"would {step.describe()}")
            continue
        try:
            apply(folder, step)
        except OSError as error:
            failure = f"{step.describe()} failed: {error}"
            break
        done.append(step)
        print(step.describe())
    rotated = sorted({step.path for step in steps if step.op in ("rotate", "copytruncate")})
    set_result(
        {
            "folder": str(folder),
            "dry_run": dry_run,
            "rotated": rotated,
            "actions": [asdict(step) | {"done": step in done} for step in steps],
            "skipped": skipped,
        }
    )
    if failure:
        print(f"Rotation stopped: {failure}", file=sys.stderr)
        return 1
    verb = "Would rotate" if dry_run else "Rotated"
    tail = "; nothing was changed" if dry_run else ""
    print(f"{verb} {len(rotated)} of {matched} matching files, {len(skipped)} skipped{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
