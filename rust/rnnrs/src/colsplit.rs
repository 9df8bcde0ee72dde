//! The time loops split by output columns: every thread owns a fixed set of hidden units with all
//! of their gates and runs the whole batch through them, step after step.
//!
//! Forward, each step `t` of a layer is one product per member, `h_{t-1} (B, H) · W_hhᵀ[:, own]`
//! (its own `G·nu` gate columns, packed once per call into the member's own panels, which stay in
//! its L2), followed right away by the cell on those columns; the member publishes its columns of
//! `h_t` and the crew meets at one barrier per step (the crew's spin-then-yield wait). Backward,
//! member `m` computes its columns of `dh_{t-1} = dG_t · W_hh[:, own]` and then, without waiting,
//! the cell backward of step `t-1` for its units; the barrier follows, because the next product
//! reads every column of `dG_{t-1}`.
//!
//! A column split never changes any output's summation order (see
//! [`crate::packed::product_by_columns`]), and the cells are elementwise per unit, so the results
//! are the same bits for any number of threads. They are also the bits of the row-block loops for
//! the same products (the same kernel and the same elementwise arithmetic).
//!
//! The crew (`crate::crew`) keeps its members for the whole call: member `m` always computes the
//! same columns, so its weights never move to the other core.

use crate::cell::{self, CellKind};
use crate::crew::{share, with_crew};
use crate::element::Element;
use crate::packed::{product_by_columns, PackedRhs, Start};
use ndarray::{ArrayView2, Axis};
use std::sync::{Arc, Mutex};

/// The forward weights of one member: `W_hhᵀ` (and the fused `W_ihᵀ`) of its columns, packed.
pub(crate) type MemberWeights<F> = (Arc<PackedRhs<F>>, Option<Arc<PackedRhs<F>>>);

/// Every member's forward weights of one direction, for a crew of `members`: cached by the layer
/// between calls while its weights do not change.
#[derive(Clone, Debug)]
pub(crate) struct FwdPack<F> {
    pub members: usize,
    pub fused: bool,
    pub weights: Vec<MemberWeights<F>>,
}

/// Hidden units per share: a multiple of 16 `f32` values is a whole number of cache lines, so
/// two members never write to the same line of `h`.
const UNIT: usize = 16;

/// The smallest hidden size the time loops split by columns (below it a share would be tiny).
pub(crate) const MIN_HIDDEN: usize = 32;

/// Members for a hidden size of `hs` with `threads` threads (each gets at least one unit block).
pub(crate) fn members(hs: usize, threads: usize) -> usize {
    threads.max(1).min(hs.div_ceil(UNIT))
}

/// A buffer several members write at disjoint positions (and read where nobody writes).
struct Shared<F> {
    ptr: *mut F,
    len: usize,
}

// SAFETY: a `Shared` lives only inside the call that made it from a `&mut [F]` (so nothing else
// touches the buffer meanwhile), and its users access disjoint ranges between barriers (see the
// methods).
unsafe impl<F: Send> Send for Shared<F> {}
unsafe impl<F: Send> Sync for Shared<F> {}

impl<F> Shared<F> {
    fn new(s: &mut [F]) -> Self {
        Shared { ptr: s.as_mut_ptr(), len: s.len() }
    }
    /// `n` values from `start`, to write.
    ///
    /// # Safety
    /// No other live slice from this `Shared` overlaps them.
    #[allow(clippy::mut_from_ref)]
    #[inline]
    unsafe fn slice_mut(&self, start: usize, n: usize) -> &mut [F] {
        assert!(start + n <= self.len, "{start}+{n} of {}", self.len);
        // SAFETY: in bounds (checked above); exclusivity is the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), n) }
    }
    /// `n` values from `start`, to read.
    ///
    /// # Safety
    /// Nobody writes them while the slice lives.
    #[inline]
    unsafe fn slice(&self, start: usize, n: usize) -> &[F] {
        assert!(start + n <= self.len, "{start}+{n} of {}", self.len);
        // SAFETY: in bounds (checked above); no writer by the caller's promise.
        unsafe { std::slice::from_raw_parts(self.ptr.add(start), n) }
    }
}

/// What both loops need to know about the recurrence.
pub(crate) struct Loop<'a> {
    pub cell: CellKind,
    pub t: usize,
    pub b: usize,
    pub hs: usize,
    pub lengths: Option<&'a [usize]>,
    pub reverse: bool,
    /// Threads to use (the crew's size before [`members`] caps it).
    pub threads: usize,
}

impl Loop<'_> {
    fn gates(&self) -> usize {
        self.cell.gates()
    }
    /// Time index of loop step `step` (forward in time, or reversed).
    fn ti(&self, step: usize) -> usize {
        if self.reverse {
            self.t - 1 - step
        } else {
            step
        }
    }
    fn padded(&self, row: usize, ti: usize) -> bool {
        self.lengths.is_some_and(|l| ti >= l[row])
    }
    fn any_padded(&self, ti: usize) -> bool {
        self.lengths.is_some_and(|l| l.iter().any(|&n| ti >= n))
    }
}

/// The rows of `w (G·H, ·)` of units `u0 .. u0 + nu`, gate by gate: `G·nu` indices.
fn gate_rows(g: usize, hs: usize, u0: usize, nu: usize) -> Vec<usize> {
    (0..g).flat_map(|q| (0..nu).map(move |j| q * hs + u0 + j)).collect()
}

/// A member's columns of a `(·, G·H)` buffer: `G` gate blocks of `nu` units from `u0`.
#[derive(Clone, Copy)]
struct Cols {
    g: usize,
    hs: usize,
    u0: usize,
    nu: usize,
}

/// Copy the member's columns (gate blocks of `nu` at `q·H + u0`) of `b` rows of a `(·, G·H)`
/// buffer starting at row `row0` into the contiguous `(b, G·nu)` `dst`.
///
/// # Safety
/// Nobody writes those values meanwhile.
unsafe fn gather_gates<F: Copy>(src: &Shared<F>, row0: usize, b: usize, Cols { g, hs, u0, nu }: Cols, dst: &mut [F]) {
    for row in 0..b {
        for q in 0..g {
            // SAFETY: the caller's promise.
            let s = unsafe { src.slice((row0 + row) * g * hs + q * hs + u0, nu) };
            dst[row * g * nu + q * nu..][..nu].copy_from_slice(s);
        }
    }
}

/// [`gather_gates`] from a buffer nobody writes.
fn gather_gates_ro<F: Copy>(src: &[F], row0: usize, b: usize, Cols { g, hs, u0, nu }: Cols, dst: &mut [F]) {
    for row in 0..b {
        for q in 0..g {
            dst[row * g * nu + q * nu..][..nu].copy_from_slice(&src[(row0 + row) * g * hs + q * hs + u0..][..nu]);
        }
    }
}

/// The inverse of [`gather_gates`].
///
/// # Safety
/// Only this member accesses those values meanwhile.
unsafe fn scatter_gates<F: Copy>(src: &[F], dst: &Shared<F>, row0: usize, b: usize, Cols { g, hs, u0, nu }: Cols) {
    for row in 0..b {
        for q in 0..g {
            // SAFETY: the caller's promise.
            let d = unsafe { dst.slice_mut((row0 + row) * g * hs + q * hs + u0, nu) };
            d.copy_from_slice(&src[row * g * nu + q * nu..][..nu]);
        }
    }
}

/// One member's view of the buffers of a forward pass.
struct FwdMember<F> {
    u0: usize,
    nu: usize,
    whh: Arc<PackedRhs<F>>,
    wih: Option<Arc<PackedRhs<F>>>,
    /// The input side's bias for the member's columns (`b_ih + b_hh`, GRU: `b_ih`).
    bias: Vec<F>,
    /// GRU: `b_hh` for the member's columns.
    bhh: Vec<F>,
    hw: Vec<F>,
    g: Vec<F>,
    xw: Vec<F>,
    /// With `project`: `(T·B, G·nu)` input projections of the member's columns.
    pre: Vec<F>,
    hp: Vec<F>,
    c: Vec<F>,
    c_new: Vec<F>,
    h: Vec<F>,
    scratch: Vec<F>,
}

/// The inputs of [`forward`].
pub(crate) struct FwdIn<'a, F> {
    pub w_hh: ArrayView2<'a, F>,
    /// With the input projection fused into the steps: the dense input rows `(T·B, I)` and `W_ih`.
    pub fused: Option<(&'a [F], ArrayView2<'a, F>)>,
    /// With `fused`: instead of a product per step, each member projects every row onto its own
    /// columns once, before the first step, with its packed (and cached) `W_ihᵀ` — for short
    /// inputs, where packing `W_ih` for one large product costs as much as the product.
    pub project: bool,
    /// `(G·H)`: added to the input side (`b_ih + b_hh`; GRU `b_ih`).
    pub pre_bias: &'a [F],
    /// `(G·H)` (GRU only).
    pub b_hh: &'a [F],
    /// `(B, H)` contiguous.
    pub h0: &'a [F],
    /// `(B, H)` contiguous (LSTM) or empty.
    pub c0: &'a [F],
    /// The members' packed weights from an earlier call with the same weights, if any.
    pub pack: Option<&'a FwdPack<F>>,
}

/// The outputs of [`forward`] (all row-major and contiguous).
pub(crate) struct FwdOut<'a, F> {
    /// `(T·B, G·H)`: unless fused (or projected), the input projection `x·W_ihᵀ` (no bias) in; for LSTM and RNN
    /// with a tape, the gate activations out (fused: out only; empty without a tape).
    pub pre: &'a mut [F],
    /// GRU with a tape: `(T·B, G·H)` gate activations and recurrent projections; else empty.
    pub gates: &'a mut [F],
    pub hw: &'a mut [F],
    /// LSTM with a tape: `(T·B, H)` cell states; else empty.
    pub c_all: &'a mut [F],
    /// `(T·B, H)` hidden states (padded steps carry the state).
    pub h_all: &'a mut [F],
    /// LSTM: `(B, H)` final cell state; else empty.
    pub c_last: &'a mut [F],
}

/// One direction's forward time loop, split by columns (see the module documentation). Returns
/// the members' packed weights, for the caller to keep while the weights do not change.
pub(crate) fn forward<F: Element>(lp: &Loop<'_>, inp: FwdIn<'_, F>, out: FwdOut<'_, F>, keep: bool) -> FwdPack<F> {
    let (t, b, hs, g) = (lp.t, lp.b, lp.hs, lp.gates());
    let (lstm, gru) = (lp.cell.has_cell_state(), lp.cell == CellKind::Gru);
    let n_members = members(hs, lp.threads);
    let slots: Vec<Mutex<Option<FwdMember<F>>>> = (0..n_members).map(|_| Mutex::new(None)).collect();
    let (pre, gates_t, hw_t, c_all, h_all, c_last) =
        (Shared::new(out.pre), Shared::new(out.gates), Shared::new(out.hw), Shared::new(out.c_all), Shared::new(out.h_all), Shared::new(out.c_last));
    let size = with_crew(n_members, |crew| {
        let size = crew.members();
        let cached = inp.pack.filter(|p| p.members == size && p.fused == inp.fused.is_some());
        // Each member packs its own weights (so they are in its cache from the start), unless an
        // earlier call left them.
        crew.run(&|m| {
            let (u0, u1) = share(hs, size, m, UNIT);
            let nu = u1 - u0;
            let rows = gate_rows(g, hs, u0, nu);
            let gn = g * nu;
            let (whh, wih) = match cached {
                Some(p) => p.weights[m].clone(),
                None => (
                    Arc::new(PackedRhs::new(inp.w_hh.select(Axis(0), &rows).t())),
                    inp.fused.map(|(_, w)| Arc::new(PackedRhs::new(w.select(Axis(0), &rows).t()))),
                ),
            };
            let pick = |v: &[F]| if v.is_empty() { Vec::new() } else { rows.iter().map(|&r| v[r]).collect() };
            let mut c = vec![F::zero(); if lstm { b * nu } else { 0 }];
            if lstm {
                for row in 0..b {
                    c[row * nu..(row + 1) * nu].copy_from_slice(&inp.c0[row * hs + u0..][..nu]);
                }
            }
            let mut st = FwdMember {
                u0,
                nu,
                whh,
                wih,
                bias: pick(inp.pre_bias),
                bhh: if gru { pick(inp.b_hh) } else { Vec::new() },
                hw: vec![F::zero(); if inp.fused.is_some() && !inp.project { 0 } else { b * gn }],
                g: vec![F::zero(); b * gn],
                xw: vec![F::zero(); if gru { b * gn } else { 0 }],
                hp: vec![F::zero(); if gru { b * nu } else { 0 }],
                c_new: vec![F::zero(); c.len()],
                c,
                h: vec![F::zero(); b * nu],
                scratch: Vec::new(),
                pre: Vec::new(),
            };
            if let (true, Some((x, _)), Some(wih), true) = (inp.project, inp.fused, &st.wih, nu > 0) {
                st.pre = vec![F::zero(); t * b * gn];
                product_by_columns(&[(x, &**wih)], &mut st.pre, Start::Zero, &mut st.scratch);
            }
            *slots[m].lock().expect("member state") = Some(st);
        });
        for step in 0..t {
            let ti = lp.ti(step);
            crew.run(&|m| {
                let mut guard = slots[m].lock().expect("member state");
                let st = guard.as_mut().expect("member state");
                let (u0, nu) = (st.u0, st.nu);
                let gn = g * nu;
                if nu == 0 {
                    return;
                }
                // SAFETY: `h_all` rows of the previous step were written before the last barrier;
                // this step writes other rows.
                let h_prev: &[F] = if step == 0 { inp.h0 } else { unsafe { h_all.slice(lp.ti(step - 1) * b * hs, b * hs) } };
                let row0 = ti * b;
                if let (Some((x, w)), Some(wih), false) = (inp.fused, &st.wih, inp.project) {
                    let width = w.ncols();
                    let xr = &x[row0 * width..(row0 + b) * width];
                    product_by_columns(&[(xr, wih), (h_prev, &st.whh)], &mut st.g, Start::Bias(&st.bias), &mut st.scratch);
                } else if gru {
                    product_by_columns(&[(h_prev, &st.whh)], &mut st.hw, Start::Bias(&st.bhh), &mut st.scratch);
                    if inp.project {
                        st.xw.copy_from_slice(&st.pre[row0 * gn..(row0 + b) * gn]);
                    } else {
                        // SAFETY: this member's columns of `pre`; nobody writes them in a GRU pass.
                        unsafe { gather_gates(&pre, row0, b, Cols { g, hs, u0, nu }, &mut st.xw) };
                    }
                    for (row, xw) in st.xw.chunks_exact_mut(gn).enumerate() {
                        xw.iter_mut().zip(&st.bias).for_each(|(v, &bb)| *v += bb);
                        st.hp[row * nu..(row + 1) * nu].copy_from_slice(&h_prev[row * hs + u0..][..nu]);
                    }
                } else {
                    product_by_columns(&[(h_prev, &st.whh)], &mut st.hw, Start::Zero, &mut st.scratch);
                    if inp.project {
                        st.g.copy_from_slice(&st.pre[row0 * gn..(row0 + b) * gn]);
                    } else {
                        // SAFETY: this member's columns of `pre`, which only it writes.
                        unsafe { gather_gates(&pre, row0, b, Cols { g, hs, u0, nu }, &mut st.g) };
                    }
                    for (gr, hw) in st.g.chunks_exact_mut(gn).zip(st.hw.chunks_exact(gn)) {
                        for ((v, &bb), &r) in gr.iter_mut().zip(&st.bias).zip(hw) {
                            *v = (*v + bb) + r;
                        }
                    }
                }
                let s = cell::Fwd {
                    xw: if gru { &st.xw } else { &[] },
                    hw: if gru { &st.hw } else { &[] },
                    bias: &[],
                    h_prev: &st.hp,
                    c_prev: &st.c,
                    gates: &mut st.g,
                    h: &mut st.h,
                    c: &mut st.c_new,
                };
                cell::forward(lp.cell, s, nu);
                for row in (0..b).filter(|&row| lp.padded(row, ti)) {
                    st.h[row * nu..(row + 1) * nu].copy_from_slice(&h_prev[row * hs + u0..][..nu]);
                    if lstm {
                        let (c, c_new) = (&st.c, &mut st.c_new);
                        c_new[row * nu..(row + 1) * nu].copy_from_slice(&c[row * nu..(row + 1) * nu]);
                    }
                }
                // SAFETY: every write below is to this member's columns of step `ti`'s rows,
                // which no other member touches and nobody reads before the next barrier.
                unsafe {
                    for row in 0..b {
                        h_all.slice_mut((row0 + row) * hs + u0, nu).copy_from_slice(&st.h[row * nu..(row + 1) * nu]);
                        if lstm && keep {
                            c_all.slice_mut((row0 + row) * hs + u0, nu).copy_from_slice(&st.c_new[row * nu..(row + 1) * nu]);
                        }
                    }
                    if keep {
                        if gru {
                            scatter_gates(&st.g, &gates_t, row0, b, Cols { g, hs, u0, nu });
                            scatter_gates(&st.hw, &hw_t, row0, b, Cols { g, hs, u0, nu });
                        } else {
                            scatter_gates(&st.g, &pre, row0, b, Cols { g, hs, u0, nu });
                        }
                    }
                    if lstm {
                        std::mem::swap(&mut st.c, &mut st.c_new);
                        if step + 1 == t {
                            for row in 0..b {
                                c_last.slice_mut(row * hs + u0, nu).copy_from_slice(&st.c[row * nu..(row + 1) * nu]);
                            }
                        }
                    }
                }
            });
        }
        size
    });
    let weights = slots
        .into_iter()
        .take(size)
        .map(|s| {
            let st = s.into_inner().expect("member state").expect("member state");
            (st.whh, st.wih)
        })
        .collect();
    FwdPack { members: size, fused: inp.fused.is_some(), weights }
}

/// One member's view of the buffers of a backward pass.
struct BwdMember<F> {
    u0: usize,
    nu: usize,
    w: PackedRhs<F>,
    dh: Vec<F>,
    dc: Vec<F>,
    dh_total: Vec<F>,
    direct: Vec<F>,
    dh_keep: Vec<F>,
    dc_keep: Vec<F>,
    gl: Vec<F>,
    hwl: Vec<F>,
    hl: Vec<F>,
    hpl: Vec<F>,
    cl: Vec<F>,
    cpl: Vec<F>,
    dgl: Vec<F>,
    dghl: Vec<F>,
    scratch: Vec<F>,
}

/// The inputs of [`backward`]: the tape's buffers (row-major, contiguous) and the gradients.
pub(crate) struct BwdIn<'a, F> {
    pub w_hh: ArrayView2<'a, F>,
    pub gates: &'a [F],
    /// GRU: `(T·B, G·H)`; else empty.
    pub hw: &'a [F],
    pub h_all: &'a [F],
    /// LSTM: `(T·B, H)`; else empty.
    pub c_all: &'a [F],
    /// `(B, H)`.
    pub h0: &'a [F],
    /// LSTM `(B, H)`; else empty.
    pub c0: &'a [F],
    /// `(T·B, H)`: the gradient from the layer's outputs.
    pub dh_seq: &'a [F],
    /// `(B, H)` each (`dc_n` LSTM only).
    pub dh_n: &'a [F],
    pub dc_n: &'a [F],
}

/// The outputs of [`backward`].
pub(crate) struct BwdOut<'a, F> {
    /// `(T·B, G·H)`: gradients of the input-side pre-activations.
    pub dg_ih: &'a mut [F],
    /// GRU `(T·B, G·H)`: of the recurrent side; else empty.
    pub dg_hh: &'a mut [F],
    /// `(B, H)`: the gradients w.r.t. the initial states (`dc0` LSTM only, else empty).
    pub dh0: &'a mut [F],
    pub dc0: &'a mut [F],
}

/// One direction's backward time loop, split by columns (see the module documentation).
pub(crate) fn backward<F: Element>(lp: &Loop<'_>, inp: BwdIn<'_, F>, out: BwdOut<'_, F>) {
    let (t, b, hs, g) = (lp.t, lp.b, lp.hs, lp.gates());
    let (lstm, gru) = (lp.cell.has_cell_state(), lp.cell == CellKind::Gru);
    let gh = g * hs;
    let n_members = members(hs, lp.threads);
    let slots: Vec<Mutex<Option<BwdMember<F>>>> = (0..n_members).map(|_| Mutex::new(None)).collect();
    let (dg_ih, dg_hh, dh0, dc0) = (Shared::new(out.dg_ih), Shared::new(out.dg_hh), Shared::new(out.dh0), Shared::new(out.dc0));
    // Read-only inputs, shared the same way (nobody writes them).
    let gates_all = inp.gates;
    with_crew(n_members, |crew| {
        let size = crew.members();
        crew.run(&|m| {
            let (u0, u1) = share(hs, size, m, UNIT);
            let nu = u1 - u0;
            let gn = g * nu;
            let w = PackedRhs::new(inp.w_hh.slice(ndarray::s![.., u0..u1]));
            let own = |v: &[F]| {
                let mut o = vec![F::zero(); if v.is_empty() { 0 } else { b * nu }];
                for (row, d) in o.chunks_exact_mut(nu.max(1)).enumerate() {
                    d.copy_from_slice(&v[row * hs + u0..][..nu]);
                }
                o
            };
            let padded = lp.lengths.is_some();
            let st = BwdMember {
                u0,
                nu,
                w,
                dh: own(inp.dh_n),
                dc: if lstm { own(inp.dc_n) } else { Vec::new() },
                dh_total: vec![F::zero(); b * nu],
                direct: vec![F::zero(); b * nu],
                dh_keep: vec![F::zero(); if padded { b * nu } else { 0 }],
                dc_keep: vec![F::zero(); if padded && lstm { b * nu } else { 0 }],
                gl: vec![F::zero(); b * gn],
                hwl: vec![F::zero(); if gru { b * gn } else { 0 }],
                hl: vec![F::zero(); b * nu],
                hpl: vec![F::zero(); if gru { b * nu } else { 0 }],
                cl: vec![F::zero(); if lstm { b * nu } else { 0 }],
                cpl: vec![F::zero(); if lstm { b * nu } else { 0 }],
                dgl: vec![F::zero(); b * gn],
                dghl: vec![F::zero(); if gru { b * gn } else { 0 }],
                scratch: Vec::new(),
            };
            *slots[m].lock().expect("member state") = Some(st);
        });
        for p in 0..=t {
            crew.run(&|m| {
                let mut guard = slots[m].lock().expect("member state");
                let st = guard.as_mut().expect("member state");
                let (u0, nu) = (st.u0, st.nu);
                if nu == 0 {
                    return;
                }
                let gn = g * nu;
                if p > 0 {
                    // dh_{t-1}[:, own] = dG_t · W_hh[:, own] (+ the direct path for GRU).
                    let ti1 = lp.ti(t - p);
                    let src = if gru { &dg_hh } else { &dg_ih };
                    // SAFETY: step `ti1`'s rows of dG were written before the last barrier; this
                    // phase writes other rows.
                    let a = unsafe { src.slice(ti1 * b * gh, b * gh) };
                    if gru {
                        st.dh.copy_from_slice(&st.direct);
                        product_by_columns(&[(a, &st.w)], &mut st.dh, Start::Accumulate, &mut st.scratch);
                    } else {
                        product_by_columns(&[(a, &st.w)], &mut st.dh, Start::Zero, &mut st.scratch);
                    }
                    for row in (0..b).filter(|&row| lp.padded(row, ti1)) {
                        let r = row * nu..(row + 1) * nu;
                        st.dh[r.clone()].copy_from_slice(&st.dh_keep[r.clone()]);
                        if lstm {
                            st.dc[r.clone()].copy_from_slice(&st.dc_keep[r]);
                        }
                    }
                }
                if p == t {
                    // SAFETY: this member's columns, which only it writes.
                    unsafe {
                        for row in 0..b {
                            dh0.slice_mut(row * hs + u0, nu).copy_from_slice(&st.dh[row * nu..(row + 1) * nu]);
                            if lstm {
                                dc0.slice_mut(row * hs + u0, nu).copy_from_slice(&st.dc[row * nu..(row + 1) * nu]);
                            }
                        }
                    }
                    return;
                }
                let step = t - 1 - p;
                let ti = lp.ti(step);
                let row0 = ti * b;
                if lp.any_padded(ti) {
                    st.dh_keep.copy_from_slice(&st.dh);
                    if lstm {
                        st.dc_keep.copy_from_slice(&st.dc);
                    }
                }
                let prev = (step > 0).then(|| lp.ti(step - 1));
                let cols = |src: &[F], row0: usize, dst: &mut [F]| {
                    for (row, d) in dst.chunks_exact_mut(nu).enumerate() {
                        d.copy_from_slice(&src[(row0 + row) * hs + u0..][..nu]);
                    }
                };
                gather_gates_ro(gates_all, row0, b, Cols { g, hs, u0, nu }, &mut st.gl);
                cols(inp.h_all, row0, &mut st.hl);
                if gru {
                    gather_gates_ro(inp.hw, row0, b, Cols { g, hs, u0, nu }, &mut st.hwl);
                    match prev {
                        Some(tp) => cols(inp.h_all, tp * b, &mut st.hpl),
                        None => cols(inp.h0, 0, &mut st.hpl),
                    }
                }
                if lstm {
                    cols(inp.c_all, row0, &mut st.cl);
                    match prev {
                        Some(tp) => cols(inp.c_all, tp * b, &mut st.cpl),
                        None => cols(inp.c0, 0, &mut st.cpl),
                    }
                }
                for (row, tot) in st.dh_total.chunks_exact_mut(nu).enumerate() {
                    let seq = &inp.dh_seq[(row0 + row) * hs + u0..][..nu];
                    for ((o, &a), &s) in tot.iter_mut().zip(&st.dh[row * nu..(row + 1) * nu]).zip(seq) {
                        *o = a + s;
                    }
                }
                let s = cell::Bwd {
                    gates: &st.gl,
                    hw: &st.hwl,
                    h: &st.hl,
                    h_prev: &st.hpl,
                    c: &st.cl,
                    c_prev: &st.cpl,
                    dh: &st.dh_total,
                    dc: &mut st.dc,
                    dg_ih: &mut st.dgl,
                    dg_hh: &mut st.dghl,
                    dh_direct: &mut st.direct,
                };
                cell::backward(lp.cell, s, nu);
                for row in (0..b).filter(|&row| lp.padded(row, ti)) {
                    st.dgl[row * gn..(row + 1) * gn].fill(F::zero());
                    if gru {
                        st.dghl[row * gn..(row + 1) * gn].fill(F::zero());
                    }
                }
                // SAFETY: this member's columns of step `ti`'s rows, which nobody else touches
                // before the next barrier.
                unsafe {
                    scatter_gates(&st.dgl, &dg_ih, row0, b, Cols { g, hs, u0, nu });
                    if gru {
                        scatter_gates(&st.dghl, &dg_hh, row0, b, Cols { g, hs, u0, nu });
                    }
                }
            });
        }
    });
}
