"""The encoder as the method sees it: architecture tables (arch), the 2L sublayers (sublayer), the sublayer-wise
forward (forward), unit masks (masks), physical shrinking (physical) and the model code shipped with every pruned
folder (hf/)."""
