"""One file from the inbox, all the way: DESIGN §5 steps 0-6, run in a worker thread.

0. stage the source into the ingest's workspace (everything after reads only that copy)
1-3. convert, put, append (ingest/pipeline.py; conversion in a converter process)
4. refresh the views (shared with every other file waiting for one)
5. archive, delete or keep the source -- or quarantine it with its error -- only if it is
   still the file that was staged
6. remove the workspace
"""

from __future__ import annotations

import logging

from lakehoused import faults
from lakehoused.daemon.converters import ConverterPool
from lakehoused.daemon.views import Views
from lakehoused.errors import SourceGone, Transient
from lakehoused.inbox import Inbox, SourceFile, StagedSource
from lakehoused.ingest.pipeline import Outcome
from lakehoused.lakehouse import Lakehouse

log = logging.getLogger("lakehoused")


class FileIngest:
    """Ingests one source file of an inbox; callable from any thread."""

    def __init__(
        self,
        lakehouse: Lakehouse,
        inbox: Inbox,
        converters: ConverterPool,
        views: Views,
        after_ingest: str,
    ) -> None:
        self.lakehouse = lakehouse
        self.inbox = inbox
        self.converters = converters
        self.views = views
        self.after_ingest = after_ingest

    def __call__(self, source: SourceFile, decided: Decided | None = None) -> Outcome | None:
        """What became of the file; None when it was gone before it could be staged.

        Raises what is not the file's fault: a Transient (retry it later) or a LogError (the
        log cannot be written), leaving the file where it is. Once the event is in, a
        failure of the steps after it is an `Undone` that carries the decision, so that the
        retry does only those steps (`decided`), never the ingest again.
        """
        if decided is not None:
            self._after(*decided)
            return decided[1]
        name = source.name.as_posix()
        with self.lakehouse.staging.workspace() as workspace:
            try:
                staged = self.inbox.stage(source, workspace.source_path(source.name.name))
            except SourceGone:
                return None  # removed (or renamed away) before we got to it
            faults.point("crash_after_stage", name)
            outcome = self.lakehouse.ingestor.ingest(staged, workspace, self.converters.convert)
            self._after(staged, outcome)
        return outcome

    def _after(self, staged: StagedSource, outcome: Outcome) -> None:
        """Steps 4-5, once the event is in: retention, the views, then the source's fate."""
        name = staged.source.name.as_posix()
        try:
            self.lakehouse.after_registration(outcome)
            self.views.reach(self.lakehouse.log.last_seq)
            faults.point("crash_after_refresh", name)
            faults.point("pause_archive", name)
            self._settle(staged, outcome)
        except (Transient, OSError) as e:
            raise Undone((staged, outcome), e) from e

    def _settle(self, staged: StagedSource, outcome: Outcome) -> None:
        """Step 5: what becomes of the source in the inbox, now that the event is in."""
        if outcome.status == "rejected":
            moved = self.inbox.quarantine(staged, error_document(outcome))
        elif self.after_ingest == "archive":
            moved = self.inbox.archive(staged)
        elif self.after_ingest == "delete":
            moved = self.inbox.delete(staged)
        else:
            return  # keep: handed over again only when it changes
        if not moved:
            log.info(
                "%s was replaced during its ingest; the new file is ingested on its own turn",
                staged.source.name,
                extra={"file": staged.source.name.as_posix(), "seq": outcome.seq},
            )


Decided = tuple[StagedSource, Outcome]
"""A file whose event is in the log: what the steps after it need."""


class Undone(Transient):
    """The event of a file is in, but a step after it failed and must be done again."""

    code = "undone"

    def __init__(self, decided: Decided, cause: BaseException) -> None:
        super().__init__(f"{decided[0].source.name} is registered, but {cause}")
        self.decided = decided


def error_document(outcome: Outcome) -> dict:
    """The `<file>.error.json` written beside a quarantined source."""
    data = outcome.event.data
    return {
        "file": outcome.name,
        "dataset": outcome.dataset,
        "reason": outcome.reason,
        "details": data.get("details", {}),
        "seq": outcome.seq,
        "at": outcome.event.at,
    }
