"""`siamese-train --from-index`: the rows an index holds, as the table training reads.

The learning loop (docs/indexing.md) trains on what the index holds, the examples
written over the API included, without the user's original table. Two kinds of row
cannot be trained on; they are set aside, said on stdout and recorded in the model's
manifest (`data.from_index`), and they stay in the index:

- rows without a label;
- the only example of a label (triplets need an anchor and a positive, and the
  folds that calibrate abstention need one to hold out). A user who teaches the
  service one example of a new label is the learning loop's first step, not bad
  data: the whole retrain used to fail on it ("have a single example"). Now the
  label stays served as any label added by Upsert is (found by its neighbours, its
  row re-embedded with the new model), and is learned once a second example is in.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

from siamese_search.core.errors import UserError
from siamese_search.core.tables import Columns, name_some, read_table

#: the columns of an exported index (indexer.export)
EXPORT_COLUMNS = Columns(text="text", label="label", id="id")


def index_table(index_dir: Path, scratch: Path, quiet: bool) -> tuple[Path, dict]:
    """The trainable rows of an index's current version as a table under `scratch`
    (exported by indexer.export, in bounded memory), and what the model's manifest
    records of where they came from."""
    from siamese_search.indexer.export import export_version

    exported = export_version(index_dir, scratch / "rows.csv", show_progress=not quiet)
    if not exported.labelled:
        raise UserError(
            f"{index_dir} has no labels (built with --no-labels): nothing to train on; "
            "train from a labelled table with --data"
        )
    table = read_table(exported.path, EXPORT_COLUMNS)
    labels = table.label_list
    counts = Counter(label for label in labels if label)
    single = sorted(label for label, n in counts.items() if n == 1)
    unlabelled = sum(1 for label in labels if not label)
    if unlabelled:
        print(f"note: {unlabelled} row(s) of {index_dir} have no label and were skipped")
    if single:
        print(
            f"note: {len(single)} label(s) of {index_dir} have a single example, so they "
            f"are not trained on: {name_some(single)}. They stay in the index, found by "
            "their neighbours as labels added by Upsert are; add a second example of each "
            "and train again to learn them"
        )
    kept = exported.path
    if unlabelled or single:
        untrained = set(single)
        keep = [i for i, label in enumerate(labels) if label and label not in untrained]
        kept = scratch / "trainable.csv"
        with open(kept, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "label", "text"])
            writer.writerows((table.ids[i], labels[i], table.texts[i]) for i in keep)
    print(
        f"training on the {exported.rows - unlabelled - len(single)} trainable rows of "
        f"{index_dir} version {exported.version}"
    )
    return kept, {
        "index": str(index_dir),
        "version": exported.version,
        "rows": exported.rows,
        "skipped_unlabelled": unlabelled,
        "untrained_single_labels": single,
    }
