"""Zero-shot tags: a vocabulary (`vocabulary`), the choice from stored vectors (`zero_shot`), and
the job that keeps a collection's tags level with its items and vocabulary (`tagger`)."""
