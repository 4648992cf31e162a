"""Learned networks, one module each, pure ``nn.Module``s with no training code.

``gatedconv``: the gated-convolution inpainter (coarse and refinement networks, contextual
attention, SN-PatchGAN discriminator); ``segnet``: ReDO's mask network used by the
refinement phase. Training lives in :mod:`iemlib.training`.
"""
