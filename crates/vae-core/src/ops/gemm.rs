//! A bounds-checked wrapper around the `gemm` crate (the matrix kernels candle itself uses).

/// A read-only matrix view: element (i, j) is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> MatRef<'a> {
    /// A contiguous row-major `rows x cols` matrix.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose of this view (no copy).
    pub fn t(self) -> Self {
        Self {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }

    fn fits(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

/// `(m, k, n)` of `lhs * rhs` into a destination of `dst_len` elements, after checking that
/// the shapes agree and the views fit their slices (panics otherwise).
fn checked(dst_len: usize, lhs: &MatRef, rhs: &MatRef) -> (usize, usize, usize) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    assert_eq!(rhs.rows, k, "matmul: inner dimensions differ");
    assert_eq!(dst_len, m * n, "matmul: destination size");
    assert!(lhs.fits() && rhs.fits(), "matmul: view out of bounds");
    (m, k, n)
}

/// `dst = (accumulate ? dst : 0) + lhs * rhs` for a contiguous row-major `dst` of
/// `lhs.rows x rhs.cols`, on the calling thread.
pub(crate) fn matmul(dst: &mut [f32], lhs: MatRef, rhs: MatRef, accumulate: bool) {
    let (m, k, n) = checked(dst.len(), &lhs, &rhs);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst.fill(0.0);
        }
        return;
    }
    // SAFETY: the views were checked above; dst is exclusively borrowed, initialised, and
    // distinct from the shared lhs and rhs.
    unsafe { raw(dst.as_mut_ptr(), lhs, rhs, accumulate) }
}

/// The `gemm` call behind both products: `dst` (row-major, `lhs.rows x rhs.cols`) receives
/// `lhs * rhs`, added to what it holds when `accumulate`.
///
/// # Safety
/// The views must fit their slices, `dst` must be valid for writes of `m * n` elements (and
/// initialised when `accumulate`), and `k` must be positive.
unsafe fn raw(dst: *mut f32, lhs: MatRef, rhs: MatRef, accumulate: bool) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            n as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// `dst = lhs * rhs` for a contiguous row-major `dst` of `lhs.rows x rhs.cols` that need not be
/// initialised: the kernel writes every element without reading any (for blocks of a result
/// written in a vector's spare capacity).
pub(crate) fn matmul_uninit(dst: &mut [std::mem::MaybeUninit<f32>], lhs: MatRef, rhs: MatRef) {
    let (m, k, n) = checked(dst.len(), &lhs, &rhs);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        dst.fill(std::mem::MaybeUninit::new(0.0));
        return;
    }
    // SAFETY: the views were checked above; without accumulation the kernel only writes dst
    // (k > 0), which is exclusively borrowed and distinct from lhs and rhs.
    unsafe { raw(dst.as_mut_ptr().cast(), lhs, rhs, false) }
}

/// `lhs * rhs` into a new row-major `lhs.rows x rhs.cols` vector, on the calling thread. The
/// destination is not initialised first: the kernel writes every element.
pub(crate) fn matmul_new(lhs: MatRef, rhs: MatRef) -> Vec<f32> {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    assert_eq!(rhs.rows, k, "matmul: inner dimensions differ");
    assert!(lhs.fits() && rhs.fits(), "matmul: view out of bounds");
    if m == 0 || n == 0 || k == 0 {
        return vec![0.0; m * n];
    }
    let mut dst: Vec<f32> = Vec::with_capacity(m * n);
    // SAFETY: the views were checked above; without accumulation the kernel writes all m * n
    // elements (k > 0) before anything reads them, and only then is the length set.
    unsafe {
        raw(dst.as_mut_ptr(), lhs, rhs, false);
        dst.set_len(m * n);
    }
    dst
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_product_writes_every_element() {
        let (m, k, n) = (37, 5, 19);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
        let c = matmul_new(MatRef::row_major(&a, m, k), MatRef::row_major(&b, k, n));
        for i in 0..m {
            for j in 0..n {
                let want: f32 = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
                assert!((c[i * n + j] - want).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn matches_naive_product_with_transposes() {
        let (m, k, n) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.11).cos()).collect(); // stored n x k
        let mut c = vec![1.0f32; m * n];
        matmul(
            &mut c,
            MatRef::row_major(&a, m, k),
            MatRef::row_major(&b, n, k).t(),
            true,
        );
        for i in 0..m {
            for j in 0..n {
                let want: f32 = 1.0 + (0..k).map(|p| a[i * k + p] * b[j * k + p]).sum::<f32>();
                assert!((c[i * n + j] - want).abs() < 1e-5);
            }
        }
    }
}
