"""Task configs of the monailabel_medunic MONAI Label app."""
