import Foundation

/// Col2Im: columns folded back into an image, overlaps summed.

/// Col2Im, since opset 18.
func col2ImKernel(_ ctx: NodeContext) throws -> Kernel {
    let attrDilations = try ctx.ints("dilations"), attrPads = try ctx.ints("pads"), attrStrides = try ctx.ints("strides")
    return AnyKernel { inputs, _ in
        let x = try inputs.tensor(0)
        let image = try inputs.tensor(1).ints("image_shape"), block = try inputs.tensor(2).ints("block_shape")
        let s = image.count
        for v in image + block + (attrDilations ?? []) + (attrPads ?? []) + (attrStrides ?? []) where !magnitude(v, below: 1 << 31) {
            throw KernelError("image_shape, block_shape, dilations, pads and strides must stay below 2^31, got \(v)")
        }
        let dil = attrDilations ?? [Int](repeating: 1, count: s), str = attrStrides ?? [Int](repeating: 1, count: s)
        let pads = attrPads ?? [Int](repeating: 0, count: 2 * s)
        guard block.count == s, dil.count == s, str.count == s, pads.count == 2 * s, x.rank == 3 else { throw KernelError("image_shape, block_shape, dilations, strides and pads disagree") }
        let kernel = block.reduce(1, *)
        guard kernel > 0, x.shape[1] % kernel == 0 else { throw KernelError("input channels \(x.shape[1]) are not a multiple of the block size \(kernel)") }
        let c = x.shape[1] / kernel
        // Blocks per spatial axis over the padded image.
        var counts: [Int] = []
        for d in 0..<s {
            guard str[d] > 0 else { throw KernelError("strides must be positive") }
            let span = dil[d] * (block[d] - 1) + 1
            counts.append((image[d] + pads[d] + pads[s + d] - span) / str[d] + 1)
        }
        try checkShape(counts.map { max($0, 0) }, "block count")
        try checkShape(image, "image_shape")
        guard counts.reduce(1, *) == x.shape[2], counts.allSatisfy({ $0 > 0 }) else { throw KernelError("input length \(x.shape[2]) does not match the block count \(counts)") }
        try checkShape(image, "image_shape")
        let data = try x.doubles()
        let l = x.shape[2], pixels = image.reduce(1, *)
        var out = [Double](repeating: 0, count: x.shape[0] * c * pixels)
        let blockStrides = contiguousStrides(block), countStrides = contiguousStrides(counts), imageStrides = contiguousStrides(image)
        for n in 0..<x.shape[0] {
            for ch in 0..<c {
                for k in 0..<kernel {
                    for p in 0..<l {
                        var flat = 0, inside = true
                        for d in 0..<s {
                            let pos = ((p / countStrides[d]) % counts[d]) * str[d] + ((k / blockStrides[d]) % block[d]) * dil[d] - pads[d]
                            if pos < 0 || pos >= image[d] { inside = false; break }
                            flat += pos * imageStrides[d]
                        }
                        if inside { out[(n * c + ch) * pixels + flat] += data[(n * x.shape[1] + ch * kernel + k) * l + p] }
                    }
                }
            }
        }
        return [.tensor(try Tensor(dtype: x.dtype, shape: [x.shape[0], c] + image, doubles: out))]
    }
}
