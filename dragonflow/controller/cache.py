"""The controller's copy of the northbound objects, kept current from the store's change log."""
from dragonflow.model import MODELS, Model
from dragonflow.store import api


class Cache:
    """Objects by table and id, plus the store revision they are current at."""

    def __init__(self):
        self.objects: dict[str, dict[str, Model]] = {table: {} for table in MODELS}
        self.revision = 0

    def load(self, revision: int, records: list[api.Record]) -> None:
        """Replace everything with a snapshot (start-up, or a resync after compaction)."""
        self.objects = {table: {} for table in MODELS}
        for record in records:
            self._put(record.table, record.id, record.value, record.revision)
        self.revision = revision

    def apply(self, event: api.Event) -> None:
        if event.deleted:
            self.objects.get(event.table, {}).pop(event.id, None)
        else:
            self._put(event.table, event.id, event.value, event.revision)
        self.revision = event.revision

    def _put(self, table: str, id: str, value: dict, revision: int) -> None:
        model = MODELS.get(table)
        if model is not None:  # tables the controller does not use (IPAM records) are skipped
            self.objects[table][id] = model.from_doc(value, revision)

    def table(self, table: str) -> dict[str, Model]:
        return self.objects[table]
