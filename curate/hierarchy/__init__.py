"""Hierarchical k-means with resampling and cluster splitting; the ``Level`` records it builds."""

from curate.hierarchy.levels import Level, LevelSpec, validate_levels
from curate.hierarchy.model import HierarchicalKMeans, resample_members
from curate.sampling import item_clusters  # a tree's item -> cluster map; sampling needs it below the hierarchy

__all__ = ["HierarchicalKMeans", "Level", "LevelSpec", "item_clusters", "resample_members", "validate_levels"]
