"""edgecam host side, stage 1: generate or read an image folder, train a classifier, export a model bundle."""
