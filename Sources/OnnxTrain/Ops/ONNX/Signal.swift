import Foundation

/// Signal processing: DFT (17, 20), STFT, HannWindow, HammingWindow, BlackmanWindow,
/// MelWeightMatrix. Transforms are direct O(n^2) sums in Double (sizes in practice are small);
/// the last input axis holds [real] or [real, imaginary].
func registerSignalOps(_ registry: OpRegistry) {
    registry.register("DFT", since: [17, 20], dftKernel)
    registry.register("STFT", since: 17, stftKernel)
    registry.register("HannWindow", since: 17, cosineWindowKernel([0.5, 0.5, 0.0]))
    registry.register("HammingWindow", since: 17, cosineWindowKernel([25.0 / 46.0, 21.0 / 46.0, 0.0]))
    registry.register("BlackmanWindow", since: 17, cosineWindowKernel([0.42, 0.5, 0.08]))
    registry.register("MelWeightMatrix", since: 17, melWeightMatrixKernel)
}

/// The HannWindow, HammingWindow and BlackmanWindow builder: a0 − a1·cos(t) + a2·cos(2t) with
/// `coefficients` [a0, a1, a2].
func cosineWindowKernel(_ coefficients: [Double]) -> KernelFactory {
    { ctx in
        let periodic = try ctx.int("periodic", default: 1) != 0
        let dtype = try dtypeFromCode(try ctx.int("output_datatype", default: Int(DType.float32.rawValue)))
        return AnyKernel { inputs, _ in
            guard let size = try inputs.tensor(0).ints("size").first, size >= 0 else { throw KernelError("size must be a nonnegative scalar") }
            try checkShape([size], "size")
            let n = Double(periodic ? size : size - 1)
            let (a0, a1, a2) = (coefficients[0], coefficients[1], coefficients[2])
            var values: [Double] = []
            for i in 0..<size {
                let t: Double = 2 * Double.pi * Double(i) / n
                let v: Double = a0 - a1 * cos(t)
                values.append(v + a2 * cos(2 * t))
            }
            return [.tensor(try Tensor(dtype: dtype, shape: [size], doubles: values))]
        }
    }
}

/// DFT, since opset 17, 20.
func dftKernel(_ ctx: NodeContext) throws -> Kernel {
    let since = ctx.sinceVersion
    let inverse = try ctx.int("inverse", default: 0) != 0
    let onesided = try ctx.int("onesided", default: 0) != 0
    let attrAxis = since < 20 ? try ctx.int("axis", default: 1) : nil
    return AnyKernel { inputs, _ in
        let x = try inputs.tensor(0)
        let length = try inputs.optionalTensor(1)?.ints("dft_length").first
        let axis = try attrAxis ?? inputs.optionalTensor(2)?.ints("axis").first ?? -2
        guard x.rank >= 2, x.shape[x.rank - 1] == 1 || x.shape[x.rank - 1] == 2 else {
            throw KernelError("input \(x.shape) must end in a [real] or [real, imaginary] axis")
        }
        let a = try normalizeAxis(axis, rank: x.rank)
        guard a < x.rank - 1 else { throw KernelError("axis \(axis) must not be the last (complex) axis") }
        return [.tensor(try dft(x, axis: a, length: length, inverse: inverse, onesided: onesided))]
    }
}

/// STFT, since opset 17.
func stftKernel(_ ctx: NodeContext) throws -> Kernel {
    let onesided = try ctx.int("onesided", default: 1) != 0
    return AnyKernel { inputs, _ in
        let x = try inputs.tensor(0)
        guard x.rank == 3, x.shape[2] == 1 || x.shape[2] == 2 else { throw KernelError("signal must be [batch, length, 1 or 2], got \(x.shape)") }
        guard let step = try inputs.tensor(1).ints("frame_step").first, step > 0 else { throw KernelError("frame_step must be positive") }
        let window = try inputs.optionalTensor(2).map { try $0.doubles() }
        let frameLength = try inputs.optionalTensor(3)?.ints("frame_length").first ?? window?.count ?? x.shape[1]
        guard frameLength > 0, frameLength <= x.shape[1], window.map({ $0.count == frameLength }) ?? true else {
            throw KernelError("frame_length \(frameLength) does not fit the signal or window")
        }
        let frames = (x.shape[1] - frameLength) / step + 1
        let (batch, comps) = (x.shape[0], x.shape[2])
        let data = try x.doubles()
        let bins = onesided ? frameLength / 2 + 1 : frameLength
        var out = [Double](repeating: 0, count: batch * frames * bins * 2)
        for b in 0..<batch {
            for f in 0..<frames {
                var re = [Double](repeating: 0, count: frameLength), im = re
                for t in 0..<frameLength {
                    let w = window?[t] ?? 1
                    let p = (b * x.shape[1] + f * step + t) * comps
                    re[t] = data[p] * w
                    if comps == 2 { im[t] = data[p + 1] * w }
                }
                let (fr, fi) = complexDFT(re, im, length: frameLength, inverse: false)
                for k in 0..<bins {
                    out[((b * frames + f) * bins + k) * 2] = fr[k]
                    out[((b * frames + f) * bins + k) * 2 + 1] = fi[k]
                }
            }
        }
        return [.tensor(try Tensor(dtype: x.dtype, shape: [batch, frames, bins, 2], doubles: out))]
    }
}

/// MelWeightMatrix, since opset 17.
func melWeightMatrixKernel(_ ctx: NodeContext) throws -> Kernel {
    let dtype = try dtypeFromCode(try ctx.int("output_datatype", default: Int(DType.float32.rawValue)))
    return AnyKernel { inputs, _ in
        guard let mels = try inputs.tensor(0).ints("num_mel_bins").first, let dftLength = try inputs.tensor(1).ints("dft_length").first,
              let rate = try inputs.tensor(2).ints("sample_rate").first,
              let lower = try inputs.tensor(3).doubles().first, let upper = try inputs.tensor(4).doubles().first,
              mels > 0, mels < 1 << 31, dftLength > 0, dftLength < SizePolicy.maxElements, rate > 0 else { throw KernelError("num_mel_bins, dft_length and sample_rate must be positive scalars") }
        let spectrogramBins = dftLength / 2 + 1
        try checkShape([spectrogramBins, mels], "output")
        // The onnx reference: mel points spaced evenly over mels + 2 steps, floored to FFT bins.
        let lowMel = 2595 * log10(1 + lower / 700), highMel = 2595 * log10(1 + upper / 700)
        let step = (highMel - lowMel) / Double(mels + 2)
        let bins = try (0..<(mels + 2)).map { i -> Int in
            let hz = 700 * (pow(10, (Double(i) * step + lowMel) / 2595) - 1)
            return try checkedInt((Double(dftLength + 1) * hz / Double(rate)).rounded(.down), "mel band edge")
        }
        var out = [Double](repeating: 0, count: spectrogramBins * mels)
        func set(_ j: Int, _ i: Int, _ v: Double) throws {
            guard j >= 0 && j < spectrogramBins else { throw KernelError("mel band edge \(j) falls outside the spectrogram") }
            out[j * mels + i] = v
        }
        for i in 0..<mels {
            let (lo, center, hi) = (bins[i], bins[i + 1], bins[i + 2])
            if center == lo { try set(center, i, 1) } else {
                for j in lo...max(lo, center) { try set(j, i, Double(j - lo) / Double(center - lo)) }
            }
            if hi > center { for j in center..<hi { try set(j, i, Double(hi - j) / Double(hi - center)) } }
        }
        return [.tensor(try Tensor(dtype: dtype, shape: [spectrogramBins, mels], doubles: out))]
    }
}

/// The DFT of (re, im) zero-padded or truncated to `length`; inverse divides by `length`.
func complexDFT(_ re: [Double], _ im: [Double], length: Int, inverse: Bool) -> ([Double], [Double]) {
    var outRe = [Double](repeating: 0, count: length), outIm = outRe
    let sign = inverse ? 1.0 : -1.0
    let n = min(re.count, length)
    for k in 0..<length {
        var sr = 0.0, si = 0.0
        for t in 0..<n {
            // Reduce k*t mod length first so the angle stays exact for long signals.
            let angle = sign * 2 * Double.pi * Double((k * t) % length) / Double(length)
            let c = cos(angle), s = sin(angle)
            sr += re[t] * c - im[t] * s
            si += re[t] * s + im[t] * c
        }
        outRe[k] = inverse ? sr / Double(length) : sr
        outIm[k] = inverse ? si / Double(length) : si
    }
    return (outRe, outIm)
}

/// DFT along `axis` of a [..., n, ..., 1|2] tensor.
private func dft(_ x: Tensor, axis: Int, length: Int?, inverse: Bool, onesided: Bool) throws -> Tensor {
    let comps = x.shape[x.rank - 1]
    let n = x.shape[axis]
    let outer = x.shape[..<axis].reduce(1, *), inner = x.shape[(axis + 1)..<(x.rank - 1)].reduce(1, *)
    let data = try x.doubles()
    // Inverse onesided: a half spectrum of n bins expands to a real signal of 2(n-1) samples.
    let fullLength = length ?? (inverse && onesided ? 2 * (n - 1) : n)
    guard fullLength > 0 else { throw KernelError("dft_length must be positive") }
    try checkShape([outer, fullLength, inner, 2], "transform")
    let outBins = inverse ? fullLength : (onesided ? fullLength / 2 + 1 : fullLength)
    let outComps = inverse && onesided ? 1 : 2
    var shape = x.shape
    shape[axis] = outBins
    shape[x.rank - 1] = outComps
    var out = [Double](repeating: 0, count: outer * outBins * inner * outComps)
    for o in 0..<outer {
        for i in 0..<inner {
            var re = [Double](repeating: 0, count: n), im = re
            for t in 0..<n {
                let p = ((o * n + t) * inner + i) * comps
                re[t] = data[p]
                if comps == 2 { im[t] = data[p + 1] }
            }
            if inverse && onesided {
                // Rebuild the Hermitian full spectrum from its first half.
                var fr = [Double](repeating: 0, count: fullLength), fi = fr
                for k in 0..<fullLength {
                    if k < n { fr[k] = re[k]; fi[k] = im[k] } else if fullLength - k < n { fr[k] = re[fullLength - k]; fi[k] = -im[fullLength - k] }
                }
                re = fr; im = fi
            }
            let (fr, fi) = complexDFT(re, im, length: fullLength, inverse: inverse)
            for k in 0..<outBins {
                let p = ((o * outBins + k) * inner + i) * outComps
                out[p] = fr[k]
                if outComps == 2 { out[p + 1] = fi[k] }
            }
        }
    }
    return try Tensor(dtype: x.dtype, shape: shape, doubles: out)
}
