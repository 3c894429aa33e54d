"""Versioned, immutable voice bundles (store.py) with model cards (card.py); inference/bundle.py builds and
loads them."""

from voicetrain.registry.store import (
    BundleNotFoundError, DamagedBundleError, ModelStore, RegistryError, VoiceRef, default_store_dir, verify_bundle)

__all__ = ["BundleNotFoundError", "DamagedBundleError", "ModelStore", "RegistryError", "VoiceRef",
           "default_store_dir", "verify_bundle"]
