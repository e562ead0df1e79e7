"""judgefree.curate: the pair store, generation and CLIP curation drivers.

Readers need only pyarrow: ``PairStore(path).records()`` yields ``PairRecord``;
``export_trl(store, out)`` writes the TRL / ``datasets`` DPO format. Schema: docs/pair_store.md.
"""

from judgefree.curate.export import export_trl
from judgefree.curate.records import PairRecord
from judgefree.curate.store import PairStore

__all__ = ["PairRecord", "PairStore", "export_trl"]
