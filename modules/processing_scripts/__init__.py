"""A1111's `modules.processing_scripts` package (its built-in processing scripts); here only `comments`."""
