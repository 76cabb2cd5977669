"""The write path: scan folders, turn files into items, encode them and store them."""
