"""`comp demo DIR`: a ready workspace on real bundled data, run end to end."""
