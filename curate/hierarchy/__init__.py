"""Hierarchical k-means with resampling and cluster splitting; the ``Level`` records it builds."""

from curate.hierarchy.levels import Level, LevelSpec, item_clusters, validate_levels
from curate.hierarchy.model import HierarchicalKMeans, resample_members

__all__ = ["HierarchicalKMeans", "Level", "LevelSpec", "item_clusters", "resample_members", "validate_levels"]
