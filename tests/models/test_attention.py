import torch
from torch import nn

from recsys.models.attention import EncoderBlock, SelfAttention


def _copy_from_mha(attn: SelfAttention, mha: nn.MultiheadAttention) -> None:
    with torch.no_grad():
        for lin, w, b in zip((attn.q, attn.k, attn.v), mha.in_proj_weight.chunk(3), mha.in_proj_bias.chunk(3)):
            lin.weight.copy_(w)
            lin.bias.copy_(b)
        attn.out.weight.copy_(mha.out_proj.weight)
        attn.out.bias.copy_(mha.out_proj.bias)


def test_equals_torch_multihead_attention_with_causal_and_padding_masks():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    attn = SelfAttention(16, 4).eval()
    _copy_from_mha(attn, mha)
    x = torch.randn(3, 6, 16)
    causal = torch.ones(6, 6, dtype=torch.bool).triu(1)
    want, _ = mha(x, x, x, attn_mask=causal, need_weights=False)
    torch.testing.assert_close(attn(x, causal=True), want, atol=1e-5, rtol=1e-5)
    keep = torch.tensor([[True] * 6, [True] * 4 + [False] * 2, [True] + [False] * 5])
    want, _ = mha(x, x, x, key_padding_mask=~keep, need_weights=False)
    torch.testing.assert_close(attn(x, key_mask=keep), want, atol=1e-5, rtol=1e-5)


def test_rows_without_keys_give_zeros_not_nan():
    attn = SelfAttention(8, 2).eval()
    out = attn(torch.randn(2, 3, 8), key_mask=torch.tensor([[False] * 3, [True, False, False]]))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0], attn.out.bias.expand(3, 8))  # attention output 0, then the out bias


def test_encoder_block_equals_torch_pre_norm_layer():
    torch.manual_seed(0)
    ref = nn.TransformerEncoderLayer(16, 4, 64, 0.0, "gelu", batch_first=True, norm_first=True).eval()
    block = EncoderBlock(16, 4).eval()
    _copy_from_mha(block.attn, ref.self_attn)
    block.attn_norm.load_state_dict(ref.norm1.state_dict())
    block.ffn_norm.load_state_dict(ref.norm2.state_dict())
    block.ffn[0].load_state_dict(ref.linear1.state_dict())
    block.ffn[3].load_state_dict(ref.linear2.state_dict())
    x = torch.randn(2, 5, 16)
    keep = torch.tensor([[True] * 5, [True, True, True, False, False]])
    want = ref(x, src_key_padding_mask=~keep)
    got = block(x, key_mask=keep)
    torch.testing.assert_close(got[keep], want[keep], atol=1e-5, rtol=1e-5)
