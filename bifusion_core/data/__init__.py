"""Data: the RGB-D frame type (:mod:`.frame`), procedural synthetic scenes (:mod:`.synthetic`) and ScanNet /
ScanNet200 readers, class tables and training crops (:mod:`.scannet`)."""
