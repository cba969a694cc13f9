"""Analysis of upstream representations: attention maps, t-SNE, layer-wise probing, reports."""
