"""The small corpus the retrieval tests share (six one-line facts, two topics)."""

TEXTS = [
    "Paris is the capital and largest city of France.",
    "The Eiffel Tower is a wrought-iron lattice tower in Paris.",
    "Berlin is the capital of Germany.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "The mitochondria is the powerhouse of the cell.",
    "Mount Everest is Earth's highest mountain above sea level.",
]
