/// Float32 kernels shared by the plugins and the trainer, so that training and serving compute the same
/// function. None allocates.
public enum Kernels {
    /// The logistic function, stable for large |x|.
    @inlinable
    public static func sigmoid(_ x: Float) -> Float {
        if x >= 0 {
            return 1 / (1 + (-x).exp)
        }
        let e = x.exp
        return e / (1 + e)
    }

    /// `bias + w · x` over `n` values.
    @inlinable
    public static func dot(_ w: UnsafePointer<Float>, _ x: UnsafePointer<Float>, _ n: Int) -> Float {
        var s0: Float = 0, s1: Float = 0, s2: Float = 0, s3: Float = 0
        var i = 0
        while i + 4 <= n {
            s0 += w[i] * x[i]
            s1 += w[i + 1] * x[i + 1]
            s2 += w[i + 2] * x[i + 2]
            s3 += w[i + 3] * x[i + 3]
            i += 4
        }
        while i < n { s0 += w[i] * x[i]; i += 1 }
        return (s0 + s1) + (s2 + s3)
    }

    /// Logistic regression: `sigmoid(bias + w · x)`.
    @inlinable
    public static func logistic(bias: Float, weights: UnsafePointer<Float>, x: UnsafePointer<Float>, n: Int) -> Float {
        sigmoid(bias + dot(weights, x, n))
    }
}

extension Float {
    @usableFromInline
    var exp: Float {
        #if canImport(Glibc)
        return Glibc.expf(self)
        #elseif canImport(Musl)
        return Musl.expf(self)
        #else
        return Darwin.expf(self)
        #endif
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#else
import Darwin
#endif
