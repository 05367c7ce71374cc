"""One MONAI Label ``TaskConfig`` per module; the app builds the infer tasks of every config here."""
