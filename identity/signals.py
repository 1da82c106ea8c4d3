"""Integration points for apps that hold data per OneID (the ``tags`` app: tag values, events).

Both are sent inside the resolution's transaction, after the records have moved,
so a receiver's writes commit or roll back with the merge or split itself.

- ``oneid_merged(survivor: int, merged: list[int], record_ids: list[int], event: MergeEvent,
  origins: dict[int, list[int]], absorbed: list[int])``: records of the OneIDs in ``merged``
  were joined into ``survivor`` (subject ids); ``record_ids`` are all the survivor's records
  now, ``origins`` the records each former OneID (the survivor included) brought into it.
  ``absorbed``: the merged OneIDs all of whose records went to ``survivor`` — they are
  retired, not deleted; move what they carry to ``survivor``. A merged OneID not absorbed
  keeps other records (or lost them to several OneIDs): an ``oneid_split`` of it follows in
  the same transaction and says where each of its records went.
- ``oneid_split(source: int, parts: dict[int, list[int]], event: MergeEvent)``: the
  records of OneID ``source`` now belong to the OneIDs in ``parts`` (subject id ->
  record ids; ``source`` itself may be one of them). Give each part back what its
  records brought (data attributed to a record by its source system and external id).

Merges are sent before splits. Receivers must accept (and ignore) keyword arguments
they do not know: the payload may grow.
"""

from django.dispatch import Signal

oneid_merged = Signal()
oneid_split = Signal()
