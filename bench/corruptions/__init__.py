"""The corruptions wing: parameter tables (`tables`), the batched engine (`engine`) and the
per-image reference backend (`reference`), the generated and canonical -C sets (`sets`), and the
engine's building blocks (`jpeg_codec`, `filter_matrices`, `random_streams`)."""
