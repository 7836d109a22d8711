// Losses fused with their gradient. The batch is small next to the layers, so each loss is a
// per-row/per-element kernel followed by a single-thread finish kernel that adds the per-element terms
// in index order in f64 (the CPU's order) and writes the mean to a device scalar; the gradient is then
// scaled by 1/normaliser. Mirrors src/backend/cpu/loss.rs formula for formula.
#include "mt.cuh"

MT_HD double mt_softplus(double x) { return fmax(x, 0.0) + log1p(exp(-fabs(x))); }
MT_HD double mt_sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

// A target is valid iff it is an integer class index in [0, classes).
MT_HD int mt_class_index(float t, u64 classes) {
    if (t >= 0.0f && floorf(t) == t && (double)t < (double)classes) return (int)t;
    return -1;
}

MT_HD double mt_class_weight(const float* class_weights, u64 c) {
    return class_weights ? (double)class_weights[c] : 1.0;
}

// Coefficient of −log p_c in sample loss: a_c = ε/C·w_c + [c = y]·(1−ε)·w_y.
MT_HD double mt_ce_coef(double eps, u64 classes, const float* class_weights, u64 c, u64 y) {
    return eps / (double)classes * mt_class_weight(class_weights, c) +
           (c == y ? (1.0 - eps) * mt_class_weight(class_weights, y) : 0.0);
}

// Softmax cross-entropy, one thread per sample. logits, dlogits: (n, classes); targets: (n);
// class_weights: (classes) or null. Writes log Z per row to rows[0..n) and, for an invalid target, 1 to
// rows[n + i]; dlogits gets the unnormalised gradient A·p_c − a_c (rounded to f32, as the CPU does).
MT_KERNEL mt_cross_entropy_rows(u64 n, u64 classes, float label_smoothing, const float* logits,
                                const float* targets, const float* class_weights, float* dlogits,
                                double* rows) {
    double eps = (double)label_smoothing;
    for (u64 i = MT_TID; i < n; i += MT_NTHREADS) {
        int y = mt_class_index(targets[i], classes);
        rows[n + i] = y < 0 ? 1.0 : 0.0;
        if (y < 0) continue;
        const float* row = logits + i * classes;
        float max_f = MT_NEG_INF;
        for (u64 c = 0; c < classes; ++c) max_f = mt_maxf(max_f, row[c]);
        double max = (double)max_f;
        double z = 0.0;
        for (u64 c = 0; c < classes; ++c) z += exp((double)row[c] - max);
        double log_z = log(z) + max;
        rows[i] = log_z;
        double coef_sum = 0.0;
        for (u64 c = 0; c < classes; ++c) coef_sum += mt_ce_coef(eps, classes, class_weights, c, (u64)y);
        for (u64 c = 0; c < classes; ++c) {
            double prob = exp((double)row[c] - log_z);
            double a = mt_ce_coef(eps, classes, class_weights, c, (u64)y);
            dlogits[i * classes + c] = (float)(coef_sum * prob - a);
        }
    }
}

// One thread: out[0] = Σ_i Σ_c a_ic·(log Z_i − z_ic) / Σ_i w_{y_i}, out[1] = 1/Σ w (0 if Σ w = 0),
// out[2] = index of the first invalid target or −1, out[3] = that target.
MT_KERNEL mt_cross_entropy_finish(u64 n, u64 classes, float label_smoothing, const float* logits,
                                  const float* targets, const float* class_weights, const double* rows,
                                  double* out) {
    if (MT_TID != 0) return;
    double eps = (double)label_smoothing;
    double total = 0.0, norm = 0.0;
    out[2] = -1.0;
    out[3] = 0.0;
    for (u64 i = 0; i < n; ++i) {
        if (rows[n + i] != 0.0) {
            out[0] = 0.0;
            out[1] = 0.0;
            out[2] = (double)i;
            out[3] = (double)targets[i];
            return;
        }
        u64 y = (u64)mt_class_index(targets[i], classes);
        const float* row = logits + i * classes;
        for (u64 c = 0; c < classes; ++c)
            total += mt_ce_coef(eps, classes, class_weights, c, y) * (rows[i] - (double)row[c]);
        norm += mt_class_weight(class_weights, y);
    }
    double inv = norm > 0.0 ? 1.0 / norm : 0.0;
    out[0] = total * inv;
    out[1] = inv;
}

// d (n) = (f32)(d · scalar[0]) in f64.
MT_KERNEL mt_scale_by_device_scalar(u64 n, const double* scalar, float* d) {
    double s = scalar[0];
    for (u64 i = MT_TID; i < n; i += MT_NTHREADS) d[i] = (float)((double)d[i] * s);
}

// Binary cross-entropy with logits, one thread per element of (n, labels). mask (n, labels) or null
// (0 = unknown label, excluded); pos_weight (labels) or null. terms (total) gets the loss term and
// grads (total) the unnormalised f64 gradient; both 0 for unknown entries.
MT_KERNEL mt_bce_elements(u64 total, u64 labels, const float* logits, const float* targets,
                          const float* mask, const float* pos_weight, double* terms, double* grads) {
    for (u64 i = MT_TID; i < total; i += MT_NTHREADS) {
        if (mask && mask[i] == 0.0f) {
            terms[i] = 0.0;
            grads[i] = 0.0;
            continue;
        }
        double x = (double)logits[i], y = (double)targets[i];
        double pw = pos_weight ? (double)pos_weight[i % labels] : 1.0;
        terms[i] = pw * y * mt_softplus(-x) + (1.0 - y) * mt_softplus(x);
        double s = mt_sigmoid(x);
        grads[i] = pw * y * (s - 1.0) + (1.0 - y) * s;
    }
}

// One thread: out[0] = Σ known terms / #known, out[1] = 1/#known (0 when nothing is known); mask null
// means every entry is known. Shared by BCE and the regression losses.
MT_KERNEL mt_masked_mean_finish(u64 total, const float* mask, const double* terms, double* out) {
    if (MT_TID != 0) return;
    u64 count = 0;
    for (u64 i = 0; i < total; ++i) count += (!mask || mask[i] != 0.0f) ? 1 : 0;
    double inv = count > 0 ? 1.0 / (double)count : 0.0;
    double sum = 0.0;
    for (u64 i = 0; i < total; ++i)
        if (!mask || mask[i] != 0.0f) sum += terms[i];
    out[0] = sum * inv;
    out[1] = inv;
}

// dst (n) = (f32)(src · scalar[0]).
MT_KERNEL mt_scale_f64_by_device_scalar(u64 n, const double* src, const double* scalar, float* dst) {
    double s = scalar[0];
    for (u64 i = MT_TID; i < n; i += MT_NTHREADS) dst[i] = (float)(src[i] * s);
}

// MSE (huber = 0) or Huber with threshold delta (huber = 1), one thread per element. pred, target,
// mask: (n), mask null or 0 = unknown target (not read); terms (n) gets the per-element loss and grads
// (n) the unnormalised f64 gradient, both 0 for unknown entries.
MT_KERNEL mt_regression_elements(u64 n, int huber, float delta, const float* pred, const float* target,
                                 const float* mask, double* terms, double* grads) {
    double dl = (double)delta;
    for (u64 i = MT_TID; i < n; i += MT_NTHREADS) {
        if (mask && mask[i] == 0.0f) {
            terms[i] = 0.0;
            grads[i] = 0.0;
            continue;
        }
        double d = (double)pred[i] - (double)target[i];
        double loss, grad;
        if (!huber) {
            loss = d * d;
            grad = 2.0 * d;
        } else if (fabs(d) <= dl) {
            loss = 0.5 * d * d;
            grad = d;
        } else {
            loss = dl * (fabs(d) - 0.5 * dl);
            grad = dl * (d != d ? d : copysign(1.0, d));
        }
        terms[i] = loss;
        grads[i] = grad;
    }
}

// Does sample a come before sample b in the risk-set order (longest follow-up first, then index)?
MT_HD int mt_cox_before(const float* time, u64 a, u64 b) {
    int ka = mt_total_order_key(time[a]), kb = mt_total_order_key(time[b]);
    return ka > kb || (ka == kb && a < b);
}

MT_HD void mt_cox_sift_down(const float* time, double* order, u64 root, u64 len) {
    for (;;) {
        u64 child = 2 * root + 1;
        if (child >= len) return;
        if (child + 1 < len && mt_cox_before(time, (u64)order[child], (u64)order[child + 1])) child += 1;
        if (!mt_cox_before(time, (u64)order[root], (u64)order[child])) return;
        double t = order[root];
        order[root] = order[child];
        order[child] = t;
        root = child;
    }
}

// Negative Cox partial log-likelihood with Breslow ties, averaged over events; one thread (the whole
// global batch). risk, time, event, drisk: (n). Scratch: order, group_start, group_sum (n each, f64).
// out[0] = loss.
MT_KERNEL mt_cox_loss(u64 n, const float* risk, const float* time, const float* event, float* drisk,
                      double* order, double* group_start, double* group_sum, double* out) {
    if (MT_TID != 0) return;
    u64 events = 0;
    for (u64 i = 0; i < n; ++i) events += event[i] != 0.0f ? 1 : 0;
    if (events == 0) {
        for (u64 i = 0; i < n; ++i) drisk[i] = 0.0f;
        out[0] = 0.0;
        return;
    }
    float shift_f = MT_NEG_INF;
    for (u64 i = 0; i < n; ++i) shift_f = mt_maxf(shift_f, risk[i]);
    double shift = (double)shift_f;
    // Heap sort into risk-set order; the order is total, so the result is the CPU's stable sort.
    for (u64 i = 0; i < n; ++i) order[i] = (double)i;
    for (u64 r = n / 2; r-- > 0;) mt_cox_sift_down(time, order, r, n);
    for (u64 end = n; end-- > 1;) {
        double t = order[0];
        order[0] = order[end];
        order[end] = t;
        mt_cox_sift_down(time, order, 0, end);
    }
    // Tied groups (equal to the group's first member) and their cumulative risk sums S.
    double running = 0.0, loss = 0.0;
    for (u64 start = 0; start < n;) {
        u64 end = start + 1;
        while (end < n && time[(u64)order[end]] == time[(u64)order[start]]) ++end;
        double members = 0.0;
        for (u64 j = start; j < end; ++j) members += exp((double)risk[(u64)order[j]] - shift);
        running += members;
        for (u64 j = start; j < end; ++j) {
            group_start[j] = (double)start;
            group_sum[j] = running;
        }
        for (u64 j = start; j < end; ++j) {
            u64 i = (u64)order[j];
            if (event[i] != 0.0f) loss -= ((double)risk[i] - shift) - log(running);
        }
        start = end;
    }
    // Σ_{events with t_i ≤ t_k} 1/S_i, from the shortest follow-up upwards.
    double inv_e = 1.0 / (double)events;
    double hazard = 0.0;
    for (u64 last = n; last > 0;) {
        u64 start = (u64)group_start[last - 1];
        double deaths = 0.0;
        u64 count = 0;
        for (u64 j = start; j < last; ++j) count += event[(u64)order[j]] != 0.0f ? 1 : 0;
        deaths = (double)count;
        hazard += deaths / group_sum[last - 1];
        for (u64 j = start; j < last; ++j) {
            u64 k = (u64)order[j];
            double delta = event[k] != 0.0f ? 1.0 : 0.0;
            drisk[k] = (float)(-(delta - exp((double)risk[k] - shift) * hazard) * inv_e);
        }
        last = start;
    }
    out[0] = loss * inv_e;
}
