"""Which characters join a word, and which marks open or close around words.

Plain constants with no imports, so that the terminal can read them before the engine (and
NumPy) is loaded.
"""

CURLY_APOSTROPHE = "\u2019"
APOSTROPHES = "'" + CURLY_APOSTROPHE
HYPHENS = "-\u2010\u2011"
#: Characters that may sit inside a word besides letters, digits and combining marks.
JOINERS = APOSTROPHES + HYPHENS

#: Marks a word may follow directly: "(the", "\u201cthe", and a straight quote that opens
#: ('said "the').
OPENING_MARKS = frozenset("([{\u201c\u2018\u00ab\"'")
#: Marks that close what comes before them: no space goes between a word and one of them.
CLOSING_MARKS = frozenset(".,;:!?)]}\u201d\u00bb\u2026")
