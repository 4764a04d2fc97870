"""Defaults of the bulk import, apart from its machinery: ``audit-ledger --help`` shows them, and
a command line that had to import the import's modules to do so would start slower for every
command (issue #16)."""

#: Lines per transaction of a bulk import. Measured as whole ``audit-ledger append`` processes
#: of 100k events (bench/end_to_end.py): 1,000 gave 9,835 events/s, 5,000 gave 12,787, and
#: 10,000 or 20,000 no more — fewer commits, probes and round trips per event, while a batch
#: still overlaps the next one's sealing.
IMPORT_BATCH_SIZE = 5000
