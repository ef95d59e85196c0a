"""Hot reload: notice changed workflow files in a folder and load the valid ones."""

from dataclasses import dataclass
from pathlib import Path

from .models import Phase
from .services import workflow_load
from .workflow_files import WorkflowFileError, read_workflow_file

PATTERNS = ("*.yaml", "*.yml")


@dataclass
class Report:
    path: Path
    ok: bool
    message: str


class WorkflowWatcher:
    """Remembers each file's last modification; `poll()` reloads what changed since.

    Files present when the watcher starts count as seen: it reloads edits, it
    does not re-import a whole folder at start-up.
    """

    def __init__(self, folder, remap=None):
        self.folder = Path(folder)
        # OLD=NEW pairs for the session: each reload uses those whose old phase its file removes.
        self.remap = dict(remap or {})
        self.seen = self._stamps()

    def _stamps(self):
        stamps = {}
        for pattern in PATTERNS:
            for path in self.folder.glob(pattern):
                try:
                    stat = path.stat()
                except OSError:
                    continue
                stamps[path] = (stat.st_mtime_ns, stat.st_size)
        return stamps

    def _remap_for(self, definition, slug):
        """The session's pairs that apply to this reload: a stored phase the file removes, a phase it keeps."""
        if not self.remap:
            return {}
        stored = set(Phase.objects.filter(workflow__slug=slug).values_list("key", flat=True))
        kept = {phase.id for phase in definition.phases}
        return {old: new for old, new in self.remap.items() if old in stored - kept and new in kept}

    def poll(self):
        current = self._stamps()
        changed = sorted(path for path, stamp in current.items() if self.seen.get(path) != stamp)
        self.seen = current
        return [self.reload(path) for path in changed]

    def reload(self, path):
        try:
            definition = read_workflow_file(path)
            slug = definition.slug or path.stem
            result = workflow_load(
                definition=definition, slug=slug, overwrite=True, remap=self._remap_for(definition, slug)
            )
        except WorkflowFileError as exc:
            exc.source = exc.source or str(path)
            return Report(path, False, f"Not reloaded; the running workflow is unchanged.\n{exc.describe()}")
        return Report(path, True, result.summary())
