"""Where a report goes: checked before any claim runs, written to a staging folder, moved into place at the end.

``valley proofs --out DIR [--docs-md PAGE]`` must not discover after twenty minutes of checks that ``DIR`` is
under ``/proc`` or under a regular file, or that ``PAGE`` cannot be written; and an interrupted run must not
leave a new plot next to an older report. So:

1. :func:`prepare` creates a staging folder beside ``DIR`` (same file system, so the final moves are renames)
   and a staging file beside ``PAGE``; any failure is an :class:`OutputError` with a one-line message, raised
   before any claim runs.
2. The claims write their plots and the reports into the staging folder.
3. :meth:`Staging.publish` moves the plots, then ``report.md``, then ``report.json`` into ``DIR`` (each an
   ``os.replace``), removes the files of the previous report that the new one no longer has, and replaces
   ``PAGE``. :meth:`Staging.discard` (on any exception or interrupt) deletes the staging folder and file,
   leaving the previous report as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import List, Optional


class OutputError(Exception):
    """An output path that cannot be used (the message is one line naming the path and the reason)."""


def _nearest_existing(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def _make_dirs(path: str, option: str) -> None:
    existing = _nearest_existing(path)
    if not os.path.isdir(existing):
        raise OutputError(f"{option} {path}: {existing} is not a directory")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise OutputError(f"{option} {path}: cannot create the directory ({error.strerror or error})") from None


class Staging:
    """A report being written: ``folder`` is where the claims write; :meth:`publish` moves it into ``out``."""

    def __init__(self, out: str, docs_md: Optional[str]) -> None:
        self.out = out
        self.docs_md = docs_md
        self.folder = ""
        self.docs_file: Optional[str] = None
        if os.path.exists(out) and not os.path.isdir(out):
            raise OutputError(f"--out {out}: exists and is not a directory")
        _make_dirs(out, "--out")
        _check_previous_report(out)
        try:
            self.folder = tempfile.mkdtemp(prefix=".proofs-staging-", dir=out)
        except OSError as error:
            raise OutputError(f"--out {out}: cannot write there ({error.strerror or error})") from None
        if docs_md:
            try:
                if os.path.isdir(docs_md):
                    raise OutputError(f"--docs-md {docs_md}: is a directory")
                if os.path.exists(docs_md) and not os.access(docs_md, os.W_OK):
                    raise OutputError(f"--docs-md {docs_md}: the file is not writable")
                _make_dirs(os.path.dirname(os.path.abspath(docs_md)), "--docs-md")
                handle, self.docs_file = tempfile.mkstemp(
                    prefix=".proofs-staging-", suffix=".md", dir=os.path.dirname(os.path.abspath(docs_md))
                )
                os.close(handle)
            except OutputError:
                self.discard()
                raise
            except OSError as error:
                self.discard()
                raise OutputError(f"--docs-md {docs_md}: cannot write there ({error.strerror or error})") from None

    def _previous_files(self) -> List[str]:
        """The plot files the previous report in ``out`` lists (none when there is no readable report: a file
        that is not one was refused by :func:`_check_previous_report` before any claim ran)."""
        try:
            with open(os.path.join(self.out, "report.json")) as handle:
                return _plots_of(json.load(handle))
        except (OSError, ValueError):
            return []

    def publish(self) -> None:
        """Moves the staged files into ``out`` (reports last) and the staged page onto ``docs_md``."""
        previous = self._previous_files()
        staged = sorted(os.listdir(self.folder))
        order = [f for f in staged if f not in ("report.md", "report.json")] + [
            f for f in ("report.md", "report.json") if f in staged
        ]
        for name in order:
            os.replace(os.path.join(self.folder, name), os.path.join(self.out, name))
        for name in previous:
            if name not in staged and os.path.isfile(os.path.join(self.out, name)):
                os.remove(os.path.join(self.out, name))
        os.rmdir(self.folder)
        if self.docs_md and self.docs_file:
            os.replace(self.docs_file, self.docs_md)
            self.docs_file = None

    def discard(self) -> None:
        """Deletes the staging folder and file (the previous report stays as it was)."""
        if self.folder and os.path.isdir(self.folder):
            shutil.rmtree(self.folder, ignore_errors=True)
        if self.docs_file and os.path.exists(self.docs_file):
            os.remove(self.docs_file)
        self.docs_file = None


def _plots_of(document: object) -> List[str]:
    """The plot file names of a report document; ``ValueError`` when it is not a proofs_check report."""
    if not isinstance(document, dict) or not isinstance(document.get("claims"), list):
        raise ValueError("not a JSON object with a 'claims' list")
    plots = []
    for claim in document["claims"]:
        if not isinstance(claim, dict) or not isinstance(claim.get("plots", []), list):
            raise ValueError("a claim is not an object with a 'plots' list")
        plots += [p for p in claim.get("plots", []) if isinstance(p, str) and p and os.sep not in p]
    return plots


def _check_previous_report(out: str) -> None:
    """Refuses an ``out`` whose ``report.json`` is not a proofs_check report: publishing would overwrite a file
    the user wrote (and its plot list is what the new report removes)."""
    path = os.path.join(out, "report.json")
    if not os.path.lexists(path):
        return
    try:
        with open(path) as handle:
            _plots_of(json.load(handle))
    except (OSError, ValueError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error).split("\n")[0]
        raise OutputError(
            f"--out {out}: {path} is not a proofs_check report ({reason}); move it away or choose another folder"
        ) from None


def prepare(out: str, docs_md: Optional[str] = None) -> Staging:
    """Checks that ``out`` (a folder) and ``docs_md`` (a file) can be written and stages them.

    Raises:
        OutputError: with a one-line message, when either cannot be written.
    """
    return Staging(out, docs_md)
