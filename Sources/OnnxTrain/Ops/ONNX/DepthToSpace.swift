/// DepthToSpace and SpaceToDepth: channel blocks moved to and from spatial positions.

/// DepthToSpace, since opset 1.
func depthToSpaceKernel(_ ctx: NodeContext) throws -> Kernel {
    let bs = try ctx.int("blocksize") ?? 0
    let mode = try ctx.string("mode", default: "DCR")
    guard bs > 0, bs < 1 << 16 else { throw KernelError("attribute 'blocksize' must be positive") }
    guard mode == "DCR" || mode == "CRD" else { throw KernelError("unknown mode '\(mode)'") }
    return AnyKernel { inputs, _ in
        let x = try inputs.tensor(0)
        guard x.rank == 4, x.shape[1] % (bs * bs) == 0 else { throw KernelError("input \(x.shape) must be NCHW with C divisible by \(bs * bs)") }
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let cc = c / (bs * bs)
        let view: [Int], perm: [Int]
        if mode == "DCR" { view = [n, bs, bs, cc, h, w]; perm = [0, 3, 4, 1, 5, 2] } else { view = [n, cc, bs, bs, h, w]; perm = [0, 1, 4, 2, 5, 3] }
        return [.tensor(try transpose(x.reshaped(view), perm: perm).reshaped([n, cc, h * bs, w * bs]))]
    }
}

/// SpaceToDepth, since opset 1.
func spaceToDepthKernel(_ ctx: NodeContext) throws -> Kernel {
    let bs = try ctx.int("blocksize") ?? 0
    guard bs > 0, bs < 1 << 16 else { throw KernelError("attribute 'blocksize' must be positive") }
    return AnyKernel { inputs, _ in
        let x = try inputs.tensor(0)
        guard x.rank == 4, x.shape[2] % bs == 0, x.shape[3] % bs == 0 else { throw KernelError("input \(x.shape) must be NCHW with H and W divisible by \(bs)") }
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let t = try transpose(x.reshaped([n, c, h / bs, bs, w / bs, bs]), perm: [0, 3, 5, 1, 2, 4])
        return [.tensor(t.reshaped([n, c * bs * bs, h / bs, w / bs]))]
    }
}
