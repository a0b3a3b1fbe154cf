"""Pictures in and out: image formats with their metadata, atomic files, jobs over many input files."""
