"""Shared by the BSDS pipeline tests: overrides that train DeepNCut in about a second
(3 train / 2 val synthetic images of 48 × 64, tiny trunk, two k-means scales, CPU)."""

BSDS_TINY = [
    "data=bsds_synthetic",
    "data.synthetic.n_train=3",
    "data.synthetic.n_val=2",
    "data.synthetic.size=[48,64]",
    "model.trunk=tiny",
    "model.taps=[out]",
    "model.pretrained=false",
    "model.freeze_through=null",
    "model.hidden=8",
    "model.out_dim=4",
    "trainer.workers=0",
    "trainer.device=cpu",
    "trainer.batch_size=2",
    "eval.ks=[2,3]",
    "eval.min_size=16",
    "eval.overlays=1",
]
