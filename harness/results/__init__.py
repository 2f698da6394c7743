"""Results: the row store (rows.jsonl per run folder), the provenance every result carries, the
paper's tables pivoted from rows, and the plots drawn from them."""
