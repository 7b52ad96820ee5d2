"""Training: the shared :class:`~varestorer.training.trainer.Trainer` and one file per training job.

Layer 4: may import any model, data or metrics code, never the CLI. It is the only package that
touches ``torch.distributed`` (in ``trainer.py``). Nothing is imported here so that importing the
package stays light.
"""
