"""Data: the RGB-D frame type (:mod:`.frame`), procedural synthetic scenes (:mod:`.synthetic`) and ScanNet /
ScanNet200 readers and class tables (:mod:`.scannet`)."""
