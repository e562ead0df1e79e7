"""judgefree.store: the pair store and its exports.

Readers need only pyarrow: ``PairStore(path).records()`` yields ``PairRecord``;
``export_trl(store, out)`` writes the TRL / ``datasets`` DPO format. Schema: docs/pair_store.md.
"""

from judgefree._lazy import lazy_exports

_EXPORTS = {
    "PairStore": "pair_store",
    "StoreWriter": "pair_store",
    "PairRecord": "records",
    "export_trl": "export",
    "ExportReport": "export",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
