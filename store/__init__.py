"""judgefree.store: the pair store and its exports.

Readers need only pyarrow: ``PairStore(path).records()`` yields ``PairRecord``;
``export_trl(store, out)`` writes the TRL / ``datasets`` DPO format. Schema: docs/pair_store.md.
"""

from judgefree._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "pair_store": ("PairStore", "StoreWriter"),
    "records": ("PairRecord",),
    "export": ("export_trl", "ExportReport"),
})
