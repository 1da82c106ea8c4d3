"""Integration points for apps that hold data per OneID (the ``tags`` app: tag values, events).

Both are sent inside the resolution's transaction, after the records have moved,
so a receiver's writes commit or roll back with the merge or split itself.

- ``oneid_merged(survivor: int, merged: list[int], record_ids: list[int], event: MergeEvent)``:
  the OneIDs in ``merged`` were joined into ``survivor`` (subject ids); their
  subjects are retired, not deleted. Move what they carry to ``survivor``.
- ``oneid_split(source: int, parts: dict[int, list[int]], event: MergeEvent)``: the
  records of OneID ``source`` now belong to the OneIDs in ``parts`` (subject id ->
  record ids; ``source`` itself may be one of them). Give each part back what its
  records brought (data attributed to a record by its source system and external id).
"""

from django.dispatch import Signal

oneid_merged = Signal()
oneid_split = Signal()
