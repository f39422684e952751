"""Files cl-fir writes and reads back: atomic writes that never leave a half-written file
(``atomic_io``), and readers that name the file and the damage in one line (``readback``)."""
