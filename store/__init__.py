"""The layer store: blobs, overlay2 layers with l/ short links, images, references, layer tars."""
