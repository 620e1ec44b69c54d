//! Pure statistics behind the forecasts: an OLS slope with its t-test, Holt's linear
//! (double exponential) smoothing with a prediction interval, and the Student t
//! distribution they need. No timely types, no clock.

/// Result of an ordinary least-squares line fit `y = intercept + slope * x`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trend {
    /// Slope per unit of `x`.
    pub slope: f64,
    /// Intercept.
    pub intercept: f64,
    /// Standard error of the slope.
    pub slope_stderr: f64,
    /// Two-sided p-value of the t-test H0: slope = 0 (with `n - 2` degrees of freedom).
    pub p_value: f64,
}

/// Fits a least-squares line and tests its slope, as `scipy.stats.linregress` does.
/// Returns `None` with fewer than three points or when all `x` are equal.
pub fn ols_trend(x: &[f64], y: &[f64]) -> Option<Trend> {
    let n = x.len().min(y.len());
    if n < 3 {
        return None;
    }
    let count = n as f64;
    let mean_x = x[..n].iter().sum::<f64>() / count;
    let mean_y = y[..n].iter().sum::<f64>() / count;
    let (mut sxx, mut sxy, mut syy) = (0.0, 0.0, 0.0);
    for index in 0..n {
        let dx = x[index] - mean_x;
        let dy = y[index] - mean_y;
        sxx += dx * dx;
        sxy += dx * dy;
        syy += dy * dy;
    }
    if sxx <= 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    let intercept = mean_y - slope * mean_x;
    let freedom = count - 2.0;
    let residual = (syy - slope * sxy).max(0.0);
    let slope_stderr = (residual / freedom / sxx).sqrt();
    let p_value = if slope_stderr == 0.0 {
        // A perfect fit: the slope is certain (0 when flat, as scipy reports 1 for a flat
        // line, whose t statistic is 0/0).
        if slope == 0.0 {
            1.0
        } else {
            0.0
        }
    } else {
        student_t_two_sided(slope / slope_stderr, freedom)
    };
    Some(Trend {
        slope,
        intercept,
        slope_stderr,
        p_value,
    })
}

/// Two-sided tail probability `P(|T| >= |t|)` of Student's t with `freedom` degrees of
/// freedom.
pub fn student_t_two_sided(t: f64, freedom: f64) -> f64 {
    if !t.is_finite() {
        return 0.0;
    }
    let x = freedom / (freedom + t * t);
    incomplete_beta(0.5 * freedom, 0.5, x).clamp(0.0, 1.0)
}

/// The regularised incomplete beta function `I_x(a, b)`, by its continued fraction
/// (modified Lentz), using the symmetry `I_x(a, b) = 1 - I_{1-x}(b, a)` where the fraction
/// converges slowly.
pub fn incomplete_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let log_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    if x < (a + 1.0) / (a + b + 2.0) {
        log_front.exp() * beta_fraction(a, b, x) / a
    } else {
        1.0 - log_front.exp() * beta_fraction(b, a, 1.0 - x) / b
    }
}

fn beta_fraction(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let mut c = 1.0;
    let mut d = 1.0 - (a + b) * x / (a + 1.0);
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut result = d;
    for m in 1..500 {
        let m = f64::from(m);
        let m2 = 2.0 * m;
        // Even step.
        let numerator = m * (b - m) * x / ((a + m2 - 1.0) * (a + m2));
        d = 1.0 + numerator * d;
        d = if d.abs() < TINY { TINY } else { d };
        c = 1.0 + numerator / c;
        c = if c.abs() < TINY { TINY } else { c };
        d = 1.0 / d;
        result *= d * c;
        // Odd step.
        let numerator = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0));
        d = 1.0 + numerator * d;
        d = if d.abs() < TINY { TINY } else { d };
        c = 1.0 + numerator / c;
        c = if c.abs() < TINY { TINY } else { c };
        d = 1.0 / d;
        let step = d * c;
        result *= step;
        if (step - 1.0).abs() < 1e-15 {
            break;
        }
    }
    result
}

/// `ln Γ(x)` for `x > 0` (Lanczos approximation, g = 7, 9 terms; ~1e-15 relative).
pub fn ln_gamma(x: f64) -> f64 {
    const COEFFICIENTS: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection.
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut sum = COEFFICIENTS[0];
    for (index, coefficient) in COEFFICIENTS.iter().enumerate().skip(1) {
        sum += coefficient / (x + index as f64);
    }
    let t = x + 7.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

/// Holt's linear method after smoothing a series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Holt {
    /// Final level.
    pub level: f64,
    /// Final trend per step.
    pub trend: f64,
    /// Standard deviation of the one-step-ahead errors (`sqrt(SSE / (n - 2))`).
    pub sigma: f64,
    /// Smoothing parameter of the level.
    pub alpha: f64,
    /// Smoothing parameter of the trend.
    pub beta: f64,
}

impl Holt {
    /// Smooths `y` with Holt's recurrences
    /// `l_t = α y_t + (1 − α)(l_{t−1} + b_{t−1})`, `b_t = β (l_t − l_{t−1}) + (1 − β) b_{t−1}`,
    /// starting from the known initial state `l_0 = y_0`, `b_0 = y_1 − y_0` placed *before*
    /// the first observation (statsmodels' `Holt(initialization_method="known")`
    /// convention). Returns `None` with fewer than two points.
    pub fn fit(y: &[f64], alpha: f64, beta: f64) -> Option<Self> {
        if y.len() < 2 {
            return None;
        }
        let mut level = y[0];
        let mut trend = y[1] - y[0];
        let mut squared_errors = 0.0;
        for &value in y {
            let predicted = level + trend;
            squared_errors += (value - predicted) * (value - predicted);
            let previous = level;
            level = alpha * value + (1.0 - alpha) * (level + trend);
            trend = beta * (level - previous) + (1.0 - beta) * trend;
        }
        let freedom = (y.len() as f64 - 2.0).max(1.0);
        Some(Self {
            level,
            trend,
            sigma: (squared_errors / freedom).sqrt(),
            alpha,
            beta,
        })
    }

    /// Point forecast `h` steps ahead.
    pub fn forecast(&self, steps: f64) -> f64 {
        self.level + steps * self.trend
    }

    /// Half-width of the 95% prediction interval `h` steps ahead, from the variance of
    /// Holt's method as an ETS(A,A,N) model:
    /// `σ² [1 + (h − 1)(α² + αβh + β²h(2h − 1)/6)]`, where the state-space `β` is
    /// `α · β*` (`β*` being Holt's trend smoothing, [`Holt::beta`]): in innovations form
    /// the trend moves by `α β* ε` per step, not `β* ε`.
    pub fn interval(&self, steps: f64) -> f64 {
        let h = steps.max(1.0);
        let (alpha, beta) = (self.alpha, self.alpha * self.beta);
        let factor = 1.0
            + (h - 1.0)
                * (alpha * alpha + alpha * beta * h + beta * beta * h * (2.0 * h - 1.0) / 6.0);
        1.96 * self.sigma * factor.sqrt()
    }

    /// Steps until the forecast line reaches `threshold` in the direction that `rising`
    /// says (`None` when the trend points away or is flat).
    pub fn steps_to(&self, threshold: f64, rising: bool) -> Option<f64> {
        let gap = threshold - self.level;
        if rising && gap <= 0.0 || !rising && gap >= 0.0 {
            return Some(0.0);
        }
        if self.trend == 0.0 || (gap > 0.0) != (self.trend > 0.0) {
            return None;
        }
        Some(gap / self.trend)
    }
}
