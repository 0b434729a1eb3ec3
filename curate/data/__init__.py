"""What the stages read: the item sources (images, texts) behind the ``data`` config node, the one
reader of a selection (a sample or dedup folder, an ids list), and the bundled datasets."""
